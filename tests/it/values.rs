//! Values: every number and duration has a range, every name must be one, every URL an http(s)
//! URL without whitespace or control characters — from a flag, an environment variable, the config
//! file and a `[[route]]` table alike, each refused with exit 2 and one line naming the flag or
//! key. Files the worker reads must be what they claim; `--print-config` into a closed pipe is
//! quiet; empty polls are paced by `--min-poll-interval`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::cli::{config_file, rejects};
use crate::support::mock::{task, MockEngine, Seen};
use crate::support::{binary, eventually, WorkerProcess, SHUTDOWN_LIMIT};

/// Each flag with a range or a name: values outside it, and the bounds, which are accepted.
const TABLE: &[(&str, &[&str], &[&str])] = &[
    ("request-timeout", &["50ms", "2h", "0s"], &["100ms", "1h"]),
    ("correlation-delay", &["25h", "1000000000y"], &["0s", "24h"]),
    ("lock-duration", &["0s", "999ms", "25h"], &["1s", "24h"]),
    ("long-poll", &["31m"], &["0s", "30m"]),
    ("min-poll-interval", &["6m"], &["0s", "5m"]),
    (
        "max-tasks",
        &["0", "10001", "-1", "4294967296"],
        &["1", "10000"],
    ),
    (
        "max-pending-follow-ups",
        &[
            "0",
            "1000001",
            "18446744073709551615",
            "99999999999999999999999",
        ],
        &["1", "1000000"],
    ),
    ("retry-budget", &["0", "10001"], &["1", "10000"]),
    ("follow-up-timeout", &["0s", "25h"], &["1s", "24h"]),
    ("follow-up-retries", &["-1", "101"], &["0", "100"]),
    ("follow-up-concurrency", &["0", "1025"], &["1", "1024"]),
    ("follow-up-lease", &["2s", "2h"], &["3s", "1h"]),
    ("correlation-timeout", &["8d"], &["0s", "7d"]),
    ("retries", &["-1", "1001"], &["0", "1000"]),
    ("retry-timeout", &["8d"], &["0s", "7d"]),
    ("max-backoff", &["0s", "2h"], &["100ms", "1h"]),
    ("shutdown-grace", &["2h"], &["0s", "1h"]),
    (
        "reconcile-interval",
        &["500ms", "25h"],
        &["0s", "1s", "24h"],
    ),
    ("topic", &["", "  ", "a\nb", "topic "], &["messageSending"]),
    ("message-name", &["", "a\rb", "\u{7}"], &["sample_response"]),
    ("worker-id", &["", " ", "w\n1"], &["worker-1"]),
    ("marker-variable", &["", "a b", "a\u{1b}b"], &["ledger"]),
    (
        "engine-url",
        &[
            "ftp://engine/engine-rest",
            "file:///etc/passwd",
            "http://engine:8080/engine-rest\n",
            "http://engine:8080/engine\n-rest",
            "http://engine:8080/engine\t-rest",
            "http://engine:8080/engine rest",
            "http://engine:8080/\u{7f}",
        ],
        &["https://engine:8443/engine-rest"],
    ),
    (
        "oauth-token-url",
        &["ldap://idp/token", "http://idp/to\nken"],
        &[],
    ),
];

fn key(flag: &str) -> String {
    flag.replace('-', "_")
}

fn env(flag: &str) -> String {
    format!("CAMUNDA_WORKER_{}", flag.replace('-', "_").to_uppercase())
}

/// `key = value` in TOML: a whole number as a number (as a user would write it), else a string.
fn toml_line(key: &str, value: &str) -> String {
    match value.parse::<i64>() {
        Ok(n) => format!("{key} = {n}\n"),
        Err(_) => format!("{key} = {}\n", toml::Value::String(value.to_owned())),
    }
}

#[test]
fn values_outside_their_range_or_empty_exit_2_with_one_line_naming_the_flag_or_key() {
    for (flag, bad, _) in TABLE {
        let dashed = format!("--{flag}");
        for value in *bad {
            eprintln!("case: --{flag} {value:?}");
            let from_flag = format!("{dashed}={value}");
            rejects(
                binary().args([&from_flag, "--print-config"]),
                &[&dashed, "invalid value"],
            );
            // An empty environment variable counts as unset (clap's rule, and what `FOO=` in a
            // compose file means), so the empties are refused from flags and files only.
            if !value.is_empty() {
                rejects(
                    binary().env(env(flag), value).arg("--print-config"),
                    &[&dashed, "invalid value"],
                );
            }
            let file = config_file(&toml_line(&key(flag), value));
            let path = file.path().to_str().unwrap();
            rejects(
                binary().args(["--config", path, "--print-config"]),
                &[&format!("key `{}`", key(flag)), path],
            );
        }
    }
}

#[test]
fn the_bounds_of_every_range_are_accepted() {
    for (flag, _, good) in TABLE {
        for value in *good {
            let output = binary()
                .arg(format!("--{flag}={value}"))
                .arg("--print-config")
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "--{flag}={value}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

#[test]
fn route_keys_are_held_to_the_same_ranges_and_names() {
    let route = "[[route]]\ntopic = \"a\"\n";
    for (line, needle) in [
        ("lock_duration = \"25h\"", "key `lock_duration`"),
        ("lock_duration = \"500ms\"", "key `lock_duration`"),
        (
            "correlation_delay = \"1000000000y\"",
            "key `correlation_delay`",
        ),
        ("message_name = \"a\\nb\"", "key `message_name`"),
        ("message_name = \" m\"", "key `message_name`"),
        ("fetch_variables = [\"\"]", "key `fetch_variables`"),
        ("variables = { \"\" = 1 }", "key `variables`"),
        (
            "message_variables = { \"a\\nb\" = 1 }",
            "key `message_variables`",
        ),
    ] {
        let file = config_file(&format!("{route}{line}\n"));
        let path = file.path().to_str().unwrap();
        rejects(
            binary().args(["--config", path, "--print-config"]),
            &["[[route]] #1", needle],
        );
    }
    for topic in ["\"\"", "\"a\\tb\"", "\" a\""] {
        let file = config_file(&format!("[[route]]\ntopic = {topic}\n"));
        let path = file.path().to_str().unwrap();
        rejects(
            binary().args(["--config", path, "--print-config"]),
            &["[[route]] #1", "`topic`"],
        );
    }
}

#[test]
fn variable_names_must_not_be_empty_or_hold_control_characters() {
    for flag in ["--var", "--message-var"] {
        for assignment in ["=1", " =1", "a\nb=1", "\u{7}=true"] {
            rejects(binary().args([flag, assignment, "--print-config"]), &[flag]);
        }
    }
    for table in [
        "[variables]\n\"\" = 1\n",
        "[message_variables]\n\"a\\tb\" = 1\n",
    ] {
        let file = config_file(table);
        let path = file.path().to_str().unwrap();
        rejects(
            binary().args(["--config", path, "--print-config"]),
            &[path, "variable name"],
        );
    }
}

#[test]
fn subcommand_numbers_and_names_have_ranges_too() {
    for (args, needle) in [
        (&["start", "--count", "0"][..], "--count"),
        (&["start", "--count", "1000001"], "--count"),
        (&["start", "--concurrency", "0"], "--concurrency"),
        (&["start", "--concurrency", "1025"], "--concurrency"),
        (&["start", "--process-key", ""], "--process-key"),
        (&["start", "--business-key", "a\nb"], "--business-key"),
        (&["deploy", "--name", " "], "--name"),
        (&["healthcheck", "--url", "gopher://x/"], "--url"),
    ] {
        rejects(
            binary()
                .args(args)
                .args(["--engine-url", "http://127.0.0.1:9/"]),
            &[needle],
        );
    }
}

/// The fetches the mock has seen so far.
fn fetches(engine: &MockEngine) -> usize {
    engine.requests_to("/external-task/fetchAndLock").len()
}

/// `--long-poll 0s` against an engine that answers `[]` at once: with the default
/// `--min-poll-interval` of 1 s the worker fetches at most once a second (it made 37 fetches a
/// second before). Counted at the mock over a window measured by the test itself, against a bound
/// derived from the pause — at most one fetch per full second of the window, plus the two at its
/// ends — which a slow machine can only stay further below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_fetch_replies_that_come_back_at_once_are_paced_by_the_minimum_poll_pause() {
    let engine = MockEngine::start(Vec::new()).await;
    Mock::given(method("POST"))
        .and(path("/engine-rest/external-task/fetchAndLock"))
        .respond_with(ImmediateEmpty {
            seen: Arc::clone(&engine.seen),
        })
        .with_priority(1)
        .mount(&engine.server)
        .await;
    let mut worker = engine.worker(&["--long-poll", "0s"]);
    eventually(Duration::from_secs(30), "two fetches", || async {
        (fetches(&engine) >= 2).then_some(())
    })
    .await;
    let (started, before) = (Instant::now(), fetches(&engine));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (window, during) = (started.elapsed(), fetches(&engine) - before);
    eprintln!("{during} fetches in {window:?}");
    worker.assert_running("while its polls are paced");
    let bound = window.as_secs() as usize + 2;
    assert!(
        during <= bound,
        "{during} fetches in {window:?}, more than one a second (bound {bound}); log:\n{}",
        worker.stderr()
    );
    assert_eq!(
        worker.terminate(SHUTDOWN_LIMIT),
        Some(0),
        "{}",
        worker.stderr()
    );
}

/// Replies with tasks are not paced: with a pause of 5 minutes, three batches of one task each
/// and the empty poll after them are all fetched within a bound far below the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_replies_with_tasks_are_not_paced() {
    let batches = (1..=3)
        .map(|i| json!([task(&format!("t{i}"), Some(&format!("k{i}")))]))
        .collect();
    let engine = MockEngine::start(batches).await;
    engine
        .on("external-task/.*/complete", ResponseTemplate::new(204))
        .await;
    let mut worker = engine.worker(&["--min-poll-interval", "5m", "--correlation-delay", "1h"]);
    eventually(Duration::from_secs(60), "four fetches", || async {
        (fetches(&engine) >= 4).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        fetches(&engine),
        4,
        "after the empty fourth fetch, the next waits for the 5 min pause"
    );
    assert_eq!(
        worker.terminate(SHUTDOWN_LIMIT),
        Some(0),
        "{}",
        worker.stderr()
    );
}

/// fetchAndLock answered `[]` at once, recorded like the mock's own responder.
struct ImmediateEmpty {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Respond for ImmediateEmpty {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.seen.lock().unwrap().push(Seen {
            method: request.method.to_string(),
            path: request.url.path().to_owned(),
            query: Vec::new(),
            body: serde_json::from_slice(&request.body).unwrap_or_default(),
            at: std::time::Instant::now(),
        });
        ResponseTemplate::new(200).set_body_json(json!([]))
    }
}

/// A self-signed certificate and its key, as PEM.
fn certificate(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn a_ca_file_without_a_certificate_or_a_client_key_of_another_certificate_exit_2_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (cert, key) = certificate("camunda-worker");
    let (_, other_key) = certificate("someone-else");
    let (cert, key, other_key) = (
        write("client.pem", &cert),
        write("client.key", &key),
        write("other.key", &other_key),
    );
    let empty = write("empty.pem", "");
    let text = write("text.pem", "not a certificate\n");
    let only_key = write("only-key.pem", &std::fs::read_to_string(&key).unwrap());
    for ca in [&empty, &text, &only_key] {
        rejects(
            binary().args(["--ca-cert", ca, "--print-config"]),
            &["--ca-cert", ca, "no PEM certificate"],
        );
    }
    rejects(
        binary().args([
            "--client-cert",
            &cert,
            "--client-key",
            &other_key,
            "--print-config",
        ]),
        &["--client-key", &other_key, "does not belong", &cert],
    );
    rejects(
        binary().args([
            "--client-cert",
            &key,
            "--client-key",
            &key,
            "--print-config",
        ]),
        &["--client-cert", "no PEM certificate"],
    );
    rejects(
        binary().args([
            "--client-cert",
            &cert,
            "--client-key",
            &cert,
            "--print-config",
        ]),
        &["--client-key", "no PEM private key"],
    );
    // The same files, as they belong together, are accepted; a certificate is a CA file.
    for args in [
        &["--client-cert", &cert, "--client-key", &key][..],
        &["--ca-cert", &cert],
    ] {
        let output = binary().args(args).arg("--print-config").output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn a_config_or_secret_file_that_is_no_regular_file_or_too_large_exits_2_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("worker.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let fifo = fifo.to_str().unwrap();
    let directory = dir.path().to_str().unwrap();
    let large = dir.path().join("large.toml");
    let line = "# padding padding padding padding padding padding padding padding padding\n";
    std::fs::write(&large, line.repeat(1024 * 1024 / line.len() + 1)).unwrap();
    let large = large.to_str().unwrap();
    for (flag, path, needle) in [
        ("--config", fifo, "not a regular file"),
        ("--config", directory, "a directory"),
        ("--config", large, "larger than 1024 KiB"),
        ("--config", "/dev/zero", "not a regular file"),
        ("--ca-cert", fifo, "not a regular file"),
        ("--ca-cert", large, "larger than"),
        ("--bearer-token-file", fifo, "not a regular file"),
        ("--bearer-token-file", directory, "a directory"),
    ] {
        // A FIFO nobody writes to would block a reader for good: the worker must not open it.
        let mut child = binary()
            .args([flag, path, "--print-config"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() >= deadline {
                child.kill().unwrap();
                panic!("{flag} {path}: the worker did not exit within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {path}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{flag} {path}: {stderr}");
        for wanted in [flag.trim_start_matches("--config"), path, needle] {
            assert!(
                lines[0].contains(wanted),
                "{flag} {path}: `{wanted}` missing: {stderr}"
            );
        }
    }
}

/// `camunda-worker --print-config | head -1` style: the reader closed the pipe before the worker
/// wrote. Exit 0 and nothing on stderr (it panicked with "failed printing to stdout", exit 101).
#[test]
fn print_config_into_a_closed_pipe_exits_0_quietly() {
    for _ in 0..3 {
        let mut child = binary()
            .arg("--print-config")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Closed at once, long before the worker has parsed its configuration.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
        assert!(stderr.is_empty(), "stderr: {stderr}");
    }
}

/// A loop paced by a minimum poll pause longer than its long poll is not stuck: `/healthz` stays
/// 200 past twice the long poll and its margin (2 s for `--long-poll 0s`), while the next poll
/// waits for the 5-minute pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_waiting_out_the_minimum_poll_pause_stays_healthy() {
    let engine = MockEngine::start(Vec::new()).await;
    Mock::given(method("POST"))
        .and(path("/engine-rest/external-task/fetchAndLock"))
        .respond_with(ImmediateEmpty {
            seen: Arc::clone(&engine.seen),
        })
        .with_priority(1)
        .mount(&engine.server)
        .await;
    let mut worker = engine.worker(&["--long-poll", "0s", "--min-poll-interval", "5m"]);
    eventually(Duration::from_secs(30), "the first fetch", || async {
        (fetches(&engine) >= 1).then_some(())
    })
    .await;
    let polled = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(fetches(&engine), 1, "the second fetch waits for the pause");
    assert!(
        polled.elapsed() < Duration::from_secs(300),
        "still within the pause"
    );
    assert_eq!(worker.probe("/healthz").await, 200, "{}", worker.stderr());
    assert_eq!(
        worker.terminate(SHUTDOWN_LIMIT),
        Some(0),
        "{}",
        worker.stderr()
    );
}

/// Every flag that takes a number or a duration has a row in [`TABLE`] (so a range, refused
/// outside it, and in the README), and its bounds are not the type's.
#[test]
fn every_number_and_duration_flag_is_in_the_range_table() {
    use clap::CommandFactory;
    let command = camunda_worker::cli::Cli::command();
    let (mut missing, mut checked) = (Vec::new(), 0);
    for arg in command.get_arguments() {
        let takes_number = arg
            .get_value_names()
            .is_some_and(|names| names.iter().any(|n| *n == "N" || *n == "DURATION"));
        let Some(long) = arg.get_long() else { continue };
        checked += usize::from(takes_number);
        if takes_number
            && !TABLE
                .iter()
                .any(|(flag, bad, _)| *flag == long && !bad.is_empty())
        {
            missing.push(long.to_owned());
        }
    }
    assert!(missing.is_empty(), "no range test for: {missing:?}");
    assert!(
        checked >= 17,
        "only {checked} number and duration flags found"
    );
}

/// The bounds are not only accepted but work: a worker with every number and duration at its
/// lowest, and one with every one at its highest, polls, is healthy and ends with exit 0 on
/// SIGTERM — no overflow, no panic at either end of a range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_with_every_value_at_either_end_of_its_range() {
    for (end, index) in [("lowest", 0), ("highest", 1)] {
        let engine = MockEngine::start(Vec::new()).await;
        let mut flags = Vec::new();
        for (flag, _, good) in TABLE {
            let takes_range = good.len() >= 2 && !flag.ends_with("-url");
            if takes_range {
                let value = if index == 0 {
                    good[0]
                } else {
                    good[good.len() - 1]
                };
                flags.push(format!("--{flag}={value}"));
            }
        }
        eprintln!("{end}: {flags:?}");
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut worker = WorkerProcess::spawn(end, &engine.url(), &flags);
        eventually(Duration::from_secs(30), "a fetch", || async {
            (fetches(&engine) >= 1).then_some(())
        })
        .await;
        assert_eq!(
            worker.probe("/healthz").await,
            200,
            "{end}: {}",
            worker.stderr()
        );
        worker.assert_running(end);
        assert_eq!(
            worker.terminate(SHUTDOWN_LIMIT),
            Some(0),
            "{end}: {flags:?}\n{}",
            worker.stderr()
        );
        assert!(!worker.stderr().contains("panicked"), "{}", worker.stderr());
    }
}
