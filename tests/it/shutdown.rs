//! Shutdown cannot be held: a closed stderr, a client that sends half a request to the metrics
//! port, a metrics listener turned off, or a name lookup (DNS discovery's) that hangs do not keep
//! SIGTERM from ending the worker within its grace with exit 0; the follow-up command's stderr is
//! relayed in bounded lines.
//!
//! Every bound on a wait here is the grace plus a generous margin for a loaded machine: a
//! timeout, not a speed claim.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::ResponseTemplate;

use crate::support::engine::free_port;
use crate::support::mock::{task, MockEngine};
use crate::support::{binary, eventually, lines_with, metric_value};

/// The grace these workers get on SIGTERM.
const GRACE: &str = "3s";

/// Grace plus a margin for a loaded 2-core machine.
const EXIT_LIMIT: Duration = Duration::from_secs(20);

/// A worker binary against `engine` whose stderr is whatever `stderr` is.
struct Worker {
    child: Child,
    metrics_addr: String,
}

impl Worker {
    fn spawn(engine: &MockEngine, flags: &[&str], stderr: Stdio) -> Worker {
        Self::spawn_logging(engine, flags, stderr, "info")
    }

    /// [`Worker::spawn`] logging at `level` (`RUST_LOG`).
    fn spawn_logging(engine: &MockEngine, flags: &[&str], stderr: Stdio, level: &str) -> Worker {
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let mut args = vec![
            "--engine-url".to_owned(),
            engine.url(),
            "--reconcile-interval".to_owned(),
            "0".to_owned(),
            "--shutdown-grace".to_owned(),
            GRACE.to_owned(),
        ];
        if !flags.contains(&"--metrics-addr") {
            args.extend(["--metrics-addr".to_owned(), metrics_addr.clone()]);
        }
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        let child = binary()
            .env("RUST_LOG", level)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Worker {
            child,
            metrics_addr,
        }
    }

    async fn scrape(&self) -> String {
        let url = format!("http://{}/metrics", self.metrics_addr);
        eventually(
            Duration::from_secs(30),
            "the worker serves /metrics",
            || {
                let url = url.clone();
                async move {
                    let reply = reqwest::Client::new()
                        .get(url)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await
                        .ok()?;
                    reply.text().await.ok()
                }
            },
        )
        .await
    }

    /// SIGTERM, then the exit code within [`EXIT_LIMIT`] (the test fails past it).
    fn terminate(&mut self) -> Option<i32> {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.wait_exit()
    }

    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + EXIT_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the worker did not exit within {EXIT_LIMIT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test]
async fn a_worker_whose_stderr_is_a_closed_pipe_counts_dropped_lines_and_exits_0_on_sigterm() {
    let engine = MockEngine::start(vec![]).await;
    // Every fetch fails: the worker logs a WARN for each, so it keeps writing to its stderr.
    engine
        .fetch_first(1_000_000, ResponseTemplate::new(500))
        .await;
    let mut worker = Worker::spawn(&engine, &[], Stdio::piped());
    // The read end closed: every write to stderr now fails with EPIPE.
    drop(worker.child.stderr.take());
    // It keeps serving; by its third failed fetch it has logged (tried to) a WARN for each.
    eventually(Duration::from_secs(60), "three failed fetches", || async {
        (engine.requests_to("/fetchAndLock").len() >= 3).then_some(())
    })
    .await;
    let metrics = worker.scrape().await;
    assert_eq!(worker.terminate(), Some(0));
    // What it could not log, it counted.
    assert!(
        metric_value(&metrics, "camunda_worker_log_lines_dropped_total") >= 1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_worker_whose_stderr_nobody_reads_keeps_working_and_exits_0_on_sigterm() {
    // Logging at trace, every task and call writes dozens of lines: the pipe (64 KiB) fills
    // within moments, and the worker's lines then wait for a reader that never comes.
    let tasks = (0..2000)
        .map(|i| task(&format!("t{i}"), Some(&format!("bk-{i}"))))
        .collect();
    let engine = MockEngine::with_tasks(tasks).await;
    engine
        .on("external-task/[^/]+/complete", ResponseTemplate::new(204))
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let mut worker = Worker::spawn_logging(
        &engine,
        &["--correlation-delay", "0s"],
        Stdio::piped(),
        "trace",
    );
    let _unread = worker.child.stderr.take();
    let metrics = eventually(
        Duration::from_secs(120),
        "log lines dropped at a full stderr",
        || async {
            let metrics = worker.scrape().await;
            (metric_value(&metrics, "camunda_worker_log_lines_dropped_total") >= 1.0)
                .then_some(metrics)
        },
    )
    .await;
    // It still polls with its stderr full.
    let polls = engine.requests_to("/fetchAndLock").len();
    eventually(Duration::from_secs(60), "another poll", || async {
        (engine.requests_to("/fetchAndLock").len() > polls).then_some(())
    })
    .await;
    assert!(metrics.contains("camunda_worker_log_lines_dropped_total"));
    assert_eq!(worker.terminate(), Some(0));
}

#[tokio::test]
async fn a_half_request_on_the_metrics_port_is_closed_and_does_not_hold_sigterm() {
    let engine = MockEngine::start(vec![]).await;
    let mut worker = Worker::spawn(&engine, &[], Stdio::null());
    worker.scrape().await;
    // Headers begun, never finished: the worker closes such a connection (end of stream, or a
    // reset) without an answer, while it runs.
    let half = b"GET /metrics HTTP/1.1\r\nHost: worker\r\nX-Slow: ";
    let mut timed_out = tokio::net::TcpStream::connect(&worker.metrics_addr)
        .await
        .unwrap();
    timed_out.write_all(half).await.unwrap();
    let mut reply = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(60), timed_out.read_to_end(&mut reply))
        .await
        .expect("the worker closes a connection whose headers never end");
    assert!(
        closed.is_err() || !String::from_utf8_lossy(&reply).contains("200 OK"),
        "no answer to half a request: {}",
        String::from_utf8_lossy(&reply)
    );
    // The listener still serves everyone else.
    assert!(worker.scrape().await.contains("camunda_worker_"));
    // Half a request sent just before SIGTERM: the connection the old listener waited for at
    // shutdown, past the grace.
    let mut held = tokio::net::TcpStream::connect(&worker.metrics_addr)
        .await
        .unwrap();
    held.write_all(half).await.unwrap();
    assert_eq!(worker.terminate(), Some(0));
    drop(held);
}

#[tokio::test]
async fn with_metrics_addr_off_the_worker_serves_no_listener_and_still_works() {
    let engine = MockEngine::one_task("bk-off").await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut worker = Worker::spawn(
        &engine,
        &["--metrics-addr", "off", "--correlation-delay", "0s"],
        Stdio::from(log.reopen().unwrap()),
    );
    eventually(Duration::from_secs(60), "the task completed", || async {
        (!engine.requests_to("external-task/t1/complete").is_empty()).then_some(())
    })
    .await;
    assert_eq!(worker.terminate(), Some(0));
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(text.contains("--metrics-addr off"), "{text}");
    assert!(!text.contains("metrics on /metrics"), "{text}");
    // Nothing listens where the worker would have: the port it was handed stays free.
    assert!(std::net::TcpListener::bind(&worker.metrics_addr).is_ok());
}

#[test]
fn healthcheck_with_metrics_addr_off_says_there_is_nothing_to_probe() {
    let out = binary()
        .args(["healthcheck", "--metrics-addr", "off"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--metrics-addr is off"), "{stderr}");
}

#[test]
fn a_metrics_addr_that_is_neither_an_address_nor_off_is_exit_2_naming_the_flag() {
    let out = binary()
        .args(["--metrics-addr", "of", "--print-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--metrics-addr"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The worker's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[tokio::test]
async fn a_command_flooding_stderr_without_a_newline_keeps_the_worker_small_and_its_later_lines_relayed(
) {
    let dir = tempfile::tempdir().unwrap();
    let command = dir.path().join("flood.sh");
    // 50 MB in one line, then a line with a byte that is not UTF-8, then a plain line.
    std::fs::write(
        &command,
        "#!/bin/sh\ncat > /dev/null\nhead -c 50000000 /dev/zero | tr '\\0' 'a' >&2\nprintf '\\nbad \\377 byte\\nafter-the-flood\\n' >&2\necho '{}'\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&command, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let engine = MockEngine::one_task("bk-flood").await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut worker = Worker::spawn(
        &engine,
        &[
            "--correlation-delay",
            "0s",
            "--follow-up-command",
            command.to_str().unwrap(),
        ],
        Stdio::from(log.reopen().unwrap()),
    );
    eventually(
        Duration::from_secs(120),
        "the follow-up message after the command",
        || async { (!engine.requests_to("/message").is_empty()).then_some(()) },
    )
    .await;
    let peak = peak_rss_kib(worker.child.id());
    eprintln!("worker peak RSS while the command flooded stderr: {peak} KiB");
    assert_eq!(worker.terminate(), Some(0));
    let text = std::fs::read_to_string(log.path()).unwrap();
    // Reading 50 MB as one line took at least that much memory; a 4 KiB line bound leaves the
    // worker at its usual size (a debug build: about 20 MiB).
    assert!(
        peak < 40 * 1024,
        "peak RSS {peak} KiB while the command flooded stderr"
    );
    assert!(
        text.contains(&format!("… [cut {} bytes]", 50_000_000 - 4096)),
        "the long line is logged cut, with a marker"
    );
    assert!(
        text.contains("bad \u{fffd} byte"),
        "invalid UTF-8 is replaced"
    );
    assert!(
        text.contains("follow-up command: after-the-flood"),
        "the relay goes on after the bad byte: {}",
        text.lines()
            .filter(|l| l.len() < 300)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// How many times process `pid` has `file` open (each a name lookup blocked reading it).
fn times_open(pid: u32, file: &Path) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.filter_map(Result::ok)
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == file))
        .count()
}

/// A name lookup that never returns, made on loopback alone: glibc's resolver reads the file that
/// `HOSTALIASES` names before it asks any DNS server about a name without dots, and this file is
/// a FIFO that the test holds open for writing and never writes to — so every `getaddrinfo` of the
/// engine's host blocks in that read, in one of the runtime's blocking threads, for as long as the
/// test lets it. No packet leaves the machine. The worker is told SIGTERM while its lookups hang:
/// it must exit within its grace, not wait for threads that will never finish.
///
/// SIGTERM comes once `hanging` lookups are blocked: 1 is the worker's first call at start;
/// 2 or more means a call gave up on its lookup (the connect timeout) and left its thread behind,
/// and the fetch that followed is waiting for a lookup of its own.
async fn sigterm_with_lookups_hanging_exits_within_the_shutdown_grace(hanging: usize) {
    const GRACE: Duration = Duration::from_secs(3);
    // The process's own exit after the grace: the runtime's last wait for blocking threads
    // (200 ms) and the exit itself, on a busy machine.
    const MARGIN: Duration = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let aliases: PathBuf = dir.path().join("host.aliases");
    let status = std::process::Command::new("mkfifo")
        .arg(&aliases)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", aliases.display());
    // Read and write: opening does not wait for a reader, and while it is open a reader's read
    // waits for data that never comes instead of ending at EOF.
    let hold = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&aliases)
        .unwrap();

    let log = tempfile::NamedTempFile::new().unwrap();
    let metrics_addr = format!("127.0.0.1:{}", crate::support::engine::free_port());
    let mut child = crate::support::binary()
        .env("HOSTALIASES", &aliases)
        .args([
            // No dots: the resolver consults HOSTALIASES for it.
            "--engine-url",
            "http://camunda-engine-lookup-hangs:8080/engine-rest",
            "--metrics-addr",
            &metrics_addr,
            "--shutdown-grace",
            "3s",
            "--reconcile-interval",
            "0",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stderr = || std::fs::read_to_string(log.path()).unwrap();

    crate::support::eventually(
        Duration::from_secs(30),
        &format!("{hanging} lookups of the engine's host hang in the worker"),
        || async { (times_open(pid, &aliases) >= hanging).then_some(()) },
    )
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the worker runs: {}",
        stderr()
    );

    let signalled = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if signalled.elapsed() > GRACE + MARGIN + Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the worker did not exit {:?} after SIGTERM; log:\n{}",
                signalled.elapsed(),
                stderr()
            );
        }
        // Kept: the poll step of a bounded wait for the child's exit (a std process, not a future).
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    // Still held: the lookups were hanging when the worker exited, not answered at the end.
    drop(hold);

    let log = stderr();
    assert!(
        took <= GRACE + MARGIN,
        "exited {took:?} after SIGTERM, past the {GRACE:?} grace; log:\n{log}"
    );
    assert!(exit.code().is_some(), "exited by itself ({exit}): {log}");
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(lines_with(&log, " ERROR "), 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_first_name_lookup_hangs_exits_within_the_shutdown_grace() {
    sigterm_with_lookups_hanging_exits_within_the_shutdown_grace(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_a_fetch_waits_behind_an_abandoned_name_lookup_exits_within_the_grace() {
    sigterm_with_lookups_hanging_exits_within_the_shutdown_grace(2).await;
}
