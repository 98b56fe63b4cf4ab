//! Values: every number and duration has a range, every name must be one, every URL an http(s)
//! URL without whitespace or control characters — from a flag, an environment variable, the config
//! file and a `[[route]]` table alike, each refused with exit 2 and one line naming the flag or
//! key; every value at either end of its range works. `--print-config` into a closed pipe is quiet.
//! (Files: `values_files.rs`; the minimum poll pause: `pacing.rs`.)

use std::time::Duration;

use crate::cli::{config_file, rejects};
use crate::pacing::fetches;
use crate::support::mock::MockEngine;
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

/// A refused value with stderr a closed pipe (a supervisor that went away): still exit 2, not
/// the 101 of a panic in `eprintln!`.
#[test]
fn a_refused_value_with_a_closed_stderr_still_exits_2() {
    let mut child = binary()
        .args(["--max-tasks", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(2));
}
