//! The command line: every bad input exits 2 with one line naming the culprit; precedence is
//! flag > environment > file > default.

use std::io::Write;

use std::process::Command;

fn worker() -> Command {
    crate::support::binary()
}

/// Runs with `args`, expects exit 2 and a single stderr line containing every `needle`.
pub(crate) fn rejects(command: &mut Command, needles: &[&str]) {
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "`{needle}` missing from: {}",
            lines[0]
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

pub(crate) fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

#[test]
fn an_unknown_flag_is_rejected_by_name() {
    rejects(worker().arg("--max-task").arg("3"), &["--max-task"]);
}

#[test]
fn a_malformed_engine_url_is_rejected_naming_the_flag() {
    rejects(
        worker().args(["--engine-url", "localhost:8080"]),
        &["--engine-url"],
    );
    rejects(
        worker().args(["--engine-url", "not a url"]),
        &["--engine-url"],
    );
}

#[test]
fn a_duration_that_does_not_parse_is_rejected_naming_the_flag() {
    rejects(
        worker().args(["--correlation-delay", "soon"]),
        &["--correlation-delay", "soon"],
    );
}

#[test]
fn a_long_poll_over_thirty_minutes_is_rejected() {
    rejects(
        worker().args(["--long-poll", "31m"]),
        &["--long-poll", "30m"],
    );
}

#[test]
fn zero_max_tasks_is_rejected() {
    rejects(
        worker().args(["--max-tasks", "0"]),
        &["--max-tasks", "from 1 to 10000"],
    );
}

#[test]
fn a_bad_environment_value_is_rejected_naming_the_flag() {
    rejects(
        worker().env("CAMUNDA_WORKER_LONG_POLL", "2h"),
        &["--long-poll"],
    );
}

#[test]
fn a_missing_config_file_is_rejected_naming_it() {
    rejects(
        worker().args(["--config", "/nonexistent/worker.toml", "--print-config"]),
        &["config file /nonexistent/worker.toml", "cannot read"],
    );
}

#[test]
fn a_config_file_that_is_not_toml_is_rejected_with_the_line() {
    let file = config_file("topic = \"a\"\nmax_tasks = = 3\n");
    rejects(
        worker()
            .arg("--config")
            .arg(file.path())
            .arg("--print-config"),
        &["not valid TOML", "line 2"],
    );
}

#[test]
fn an_unknown_config_key_is_rejected_by_name() {
    let file = config_file("topic = \"a\"\nmax_taskz = 3\n");
    rejects(
        worker()
            .arg("--config")
            .arg(file.path())
            .arg("--print-config"),
        &["unknown key `max_taskz`"],
    );
}

#[test]
fn a_bad_value_in_the_config_file_is_rejected_naming_the_key() {
    let file = config_file("long_poll = \"45m\"\n");
    rejects(
        worker()
            .arg("--config")
            .arg(file.path())
            .arg("--print-config"),
        &["key `long_poll`", "30m"],
    );
    let file = config_file("max_tasks = 0\n");
    rejects(
        worker()
            .arg("--config")
            .arg(file.path())
            .arg("--print-config"),
        &["key `max_tasks`"],
    );
}

#[test]
fn a_var_that_is_not_json_is_rejected_with_a_hint() {
    rejects(
        worker().args(["--var", "name=hello"]),
        &["--var", "not JSON"],
    );
}

#[test]
fn flag_beats_environment_beats_file_beats_default() {
    let file = config_file(
        "topic = \"from-file\"\nmessage_name = \"file-message\"\nmax_tasks = 4\ncorrelation_delay = \"3s\"\n\n[variables]\nanswer = 42\n",
    );
    let output = worker()
        .arg("--config")
        .arg(file.path())
        .args(["--topic", "from-flag", "--print-config"])
        .env("CAMUNDA_WORKER_TOPIC", "from-env")
        .env("CAMUNDA_WORKER_MESSAGE_NAME", "env-message")
        .env("CAMUNDA_WORKER_PASSWORD", "s3cret-value")
        .env("CAMUNDA_WORKER_USERNAME", "demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("topic = \"from-flag\"  # flag"), "{stdout}");
    assert!(
        stdout.contains("message_name = \"env-message\"  # env"),
        "{stdout}"
    );
    assert!(stdout.contains("max_tasks = 4  # file"), "{stdout}");
    assert!(
        stdout.contains("correlation_delay = \"3s\"  # file"),
        "{stdout}"
    );
    assert!(
        stdout.contains("lock_duration = \"1m\"  # default"),
        "{stdout}"
    );
    assert!(stdout.contains("answer = 42  # Integer"), "{stdout}");
    assert!(
        stdout.contains("password = \"********\"  # env"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("s3cret-value"),
        "a secret leaked: {stdout}"
    );
}

#[test]
fn the_worker_id_defaults_to_hostname_and_a_random_suffix() {
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let output = worker().arg("--print-config").output().unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            stdout
                .lines()
                .find(|l| l.starts_with("worker_id = "))
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(ids[0].ends_with("# generated"), "{}", ids[0]);
    assert_ne!(ids[0], ids[1], "two processes must not share a worker id");
}

#[test]
fn help_lists_every_flag_and_exits_zero() {
    let output = worker().arg("--help").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--engine-url",
        "--topic",
        "--message-name",
        "--correlation-delay",
        "--lock-duration",
        "--long-poll",
        "--max-tasks",
        "--worker-id",
        "--var",
        "--log-format",
        "--config",
        "--correlation-timeout",
        "--correlate-by",
        "--shutdown-grace",
        "--reconcile-interval",
        "--username",
        "--password-file",
        "--bearer-token-file",
        "--oauth-token-url",
        "--ca-cert",
        "--metrics-addr",
        "--print-config",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn incomplete_or_conflicting_credentials_are_rejected_naming_the_flags() {
    rejects(
        worker().args(["--username", "demo"]),
        &["--username needs --password"],
    );
    rejects(worker().args(["--password", "x"]), &["need --username"]);
    rejects(
        worker().args(["--username", "demo", "--password-file", "/nonexistent/pw"]),
        &["--password-file /nonexistent/pw", "cannot read"],
    );
    rejects(
        worker().args([
            "--username",
            "demo",
            "--password",
            "x",
            "--bearer-token",
            "t",
        ]),
        &["choose one kind of credentials"],
    );
    rejects(
        worker().args(["--oauth-token-url", "http://127.0.0.1:1/token"]),
        &["--oauth-token-url needs --oauth-client-id"],
    );
}

#[test]
fn several_engine_urls_come_from_repeated_flags_a_comma_list_or_a_file_list() {
    let print = |command: &mut Command| {
        let output = command.arg("--print-config").output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let both = r#"engine_url = ["http://a:8080/engine-rest", "http://b:8080/engine-rest"]"#;
    let flags = print(worker().args([
        "--engine-url",
        "http://a:8080/engine-rest",
        "--engine-url",
        "http://b:8080/engine-rest",
    ]));
    assert!(flags.contains(&format!("{both}  # flag")), "{flags}");
    let env = print(worker().env(
        "CAMUNDA_WORKER_ENGINE_URL",
        "http://a:8080/engine-rest,http://b:8080/engine-rest",
    ));
    assert!(env.contains(&format!("{both}  # env")), "{env}");
    let file = config_file(&format!("{both}\n"));
    let from_file = print(worker().arg("--config").arg(file.path()));
    assert!(
        from_file.contains(&format!("{both}  # file")),
        "{from_file}"
    );
    rejects(
        worker().args(["--engine-url", "http://a:8080/engine-rest,not a url"]),
        &["--engine-url", "not a url"],
    );
}

#[test]
fn dns_discovery_takes_exactly_one_engine_url() {
    rejects(
        worker().args([
            "--engine-discovery",
            "dns",
            "--engine-url",
            "http://a:8080/engine-rest,http://b:8080/engine-rest",
        ]),
        &["--engine-discovery dns", "2 were given"],
    );
    rejects(
        worker().args(["--engine-discovery", "mdns"]),
        &["--engine-discovery", "mdns"],
    );
}

/// A retry budget of 0 cannot be honoured — a follow-up that must retry would wait forever, and
/// the budget itself quietly takes 1 instead — so it is refused at start, whether it comes from the
/// flag, the environment or the file.
#[test]
fn a_retry_budget_of_zero_is_rejected_naming_the_flag() {
    rejects(
        worker().args(["--retry-budget", "0"]),
        &["--retry-budget", "0"],
    );
    rejects(
        worker().env("CAMUNDA_WORKER_RETRY_BUDGET", "0"),
        &["--retry-budget"],
    );
    let file = config_file("retry_budget = 0\n");
    rejects(
        worker().arg("--config").arg(file.path()),
        &["retry_budget", "--retry-budget"],
    );
}

/// The marker variable is the ledger's name in every instance: an empty name, or one with a space
/// or a colon (the marker's own separator), is refused at start instead of failing every
/// `complete` later.
#[test]
fn a_marker_variable_that_is_no_variable_name_is_rejected_naming_the_flag() {
    for bad in ["", " ", "follow up", "camunda:followUp"] {
        rejects(
            worker().args(["--marker-variable", bad]),
            &["--marker-variable", "not a variable name"],
        );
    }
    rejects(
        worker().env("CAMUNDA_WORKER_MARKER_VARIABLE", ""),
        &["--marker-variable"],
    );
    let file = config_file("marker_variable = \"a b\"\n");
    rejects(
        worker().arg("--config").arg(file.path()),
        &["marker_variable", "--marker-variable"],
    );
}

/// The concurrency mode is one of two words; anything else is refused at start, naming the flag and
/// both words, whether it comes from the flag, the environment or the file.
#[test]
fn a_concurrency_mode_that_is_neither_adaptive_nor_fixed_is_rejected_naming_both() {
    rejects(
        worker().args(["--concurrency", "fast", "--print-config"]),
        &["--concurrency", "fast", "adaptive", "fixed"],
    );
    rejects(
        worker()
            .env("CAMUNDA_WORKER_CONCURRENCY", "Adaptive")
            .arg("--print-config"),
        &["--concurrency", "Adaptive", "adaptive, fixed"],
    );
    let file = config_file("concurrency = \"gradient\"\n");
    rejects(
        worker()
            .arg("--config")
            .arg(file.path())
            .arg("--print-config"),
        &["key `concurrency`", "gradient", "adaptive, fixed"],
    );
}

/// The runtime's threads are the binary's to choose (`runtime_builder` in `main.rs`): tokio's own
/// `TOKIO_WORKER_THREADS`, which tokio would read and panic on when it is not a number, changes
/// nothing. The probe still runs on the runtime and answers as usual (unhealthy, exit 1).
#[test]
fn a_tokio_worker_threads_that_is_not_a_number_changes_nothing() {
    let output = worker()
        .env("TOKIO_WORKER_THREADS", "many")
        .args(["--metrics-addr", "127.0.0.1:1", "healthcheck"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout: {stdout} stderr: {stderr}"
    );
    assert!(
        stdout.starts_with("unhealthy: http://127.0.0.1:1/healthz"),
        "{stdout}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
