//! Secrets stay secret: credentials in an engine or token URL become credentials and appear
//! nowhere else (logs, errors, `/metrics`, `--print-config`, `--help`, `status`, `Debug`);
//! password and client secret files; and the follow-up command's environment, which holds none
//! of the worker's settings and credentials. The token endpoint's side is in `secrets_oauth.rs`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use camunda_worker::engine::{EngineClient, EngineError, FetchAndLockRequest, TopicRequest};
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::engine::free_port;
use crate::support::mock::MockEngine;
use crate::support::{binary, config_for, eventually, WorkerProcess, SHUTDOWN_LIMIT};

/// The password every test hides; no output may contain it.
pub(crate) const SECRET: &str = "S3CRET-pw-7q";
/// `Basic` of `demo:S3CRET-pw-7q`.
const BASIC: &str = "Basic ZGVtbzpTM0NSRVQtcHctN3E=";
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// `url` (`http://127.0.0.1:port/engine-rest`) with `demo:SECRET@` in it.
fn with_userinfo(url: &str) -> String {
    url.replacen("http://", &format!("http://demo:{SECRET}@"), 1)
}

pub(crate) fn assert_hidden(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the password:\n{text}");
}

/// The binary's stdout and stderr, and its exit code.
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = binary()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A configuration error: exit 2, one line on stderr that contains `names`.
fn assert_refused(args: &[&str], env: &[(&str, &str)], names: &[&str]) -> String {
    let (code, _, stderr) = run(args, env);
    assert_eq!(code, Some(2), "{args:?}: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{args:?}: one line: {stderr}"
    );
    for name in names {
        assert!(stderr.contains(name), "{args:?}: names {name}: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

pub(crate) fn secret_file(content: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(content.as_bytes()).unwrap();
    file
}

/// A run with the password in the engine URL: the engine gets it as HTTP Basic, and neither the
/// log, nor `/metrics` (whose `node` label is the URL without it), nor `status` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_engine_url_is_sent_as_basic_auth_and_shown_nowhere() {
    let engine = MockEngine::one_task("k1").await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let url = engine.url();
    let worker = WorkerProcess::spawn(
        "userinfo",
        &with_userinfo(&url),
        &["--reconcile-interval", "0", "--correlation-delay", "0s"],
    );
    let stopped = worker
        .stop_once(WAIT, "the follow-up to be sent", |_| {
            !engine.requests_to("/message").is_empty()
        })
        .await;
    let node = format!("node=\"{url}\"");
    assert!(
        stopped.metrics.contains(&node),
        "{node}:\n{}",
        stopped.metrics
    );
    assert_hidden("/metrics", &stopped.metrics);
    assert_hidden("the log", &stopped.worker.stderr());
    let requests = engine.server.received_requests().await.unwrap();
    let fetches: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path().ends_with("fetchAndLock"))
        .collect();
    assert!(!fetches.is_empty());
    for fetch in fetches {
        assert_eq!(
            fetch
                .headers
                .get("authorization")
                .map(|v| v.to_str().unwrap()),
            Some(BASIC),
            "the URL's credentials are the engine's HTTP Basic"
        );
    }

    let (_, stdout, stderr) = run(&["--engine-url", &with_userinfo(&url), "status"], &[]);
    assert!(
        stdout.contains(&format!("engine: {url}")),
        "{stdout}{stderr}"
    );
    assert_hidden("status", &format!("{stdout}{stderr}"));
}

/// The engine unreachable: the HTTP client's errors carry the request URL, which must not carry
/// the password — in the daemon's log and in a subcommand's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_about_an_unreachable_engine_do_not_show_the_password() {
    let url = format!("http://127.0.0.1:{}/engine-rest", free_port());
    let mut worker = WorkerProcess::spawn("unreachable", &with_userinfo(&url), &[]);
    eventually(WAIT, "the worker to log the unreachable engine", || async {
        let log = worker.stderr();
        log.contains("error sending request for url").then_some(())
    })
    .await;
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    let log = worker.stderr();
    assert!(log.contains(&url), "names the engine: {log}");
    assert_hidden("the log", &log);

    let (code, stdout, stderr) = run(&["--engine-url", &with_userinfo(&url), "deploy"], &[]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("127.0.0.1"), "{stderr}");
    assert_hidden("deploy's error", &format!("{stdout}{stderr}"));
}

/// `--print-config` and `--help` (with the URLs in the environment) mask credentials; a URL that
/// clap refuses is repeated in its error without the password.
#[test]
fn print_config_help_and_refused_urls_do_not_show_the_password() {
    let url = with_userinfo("http://127.0.0.1:1/engine-rest");
    let token_url = format!("https://client:{SECRET}@idp.example/token");
    let (code, stdout, stderr) = run(&["--engine-url", &url, "--print-config"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("engine_url = \"http://demo:********@127.0.0.1:1/engine-rest\""),
        "{stdout}"
    );
    assert_hidden("--print-config", &stdout);
    let (code, stdout, stderr) = run(&["--print-config"], &[("CAMUNDA_WORKER_ENGINE_URL", &url)]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_hidden("--print-config from the environment", &stdout);
    let (code, stdout, stderr) = run(&["--oauth-token-url", &token_url, "--print-config"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_hidden("--print-config of a token URL", &stdout);

    let (code, help, _) = run(
        &["--help"],
        &[
            ("CAMUNDA_WORKER_ENGINE_URL", &url),
            ("CAMUNDA_WORKER_OAUTH_TOKEN_URL", &token_url),
            ("CAMUNDA_WORKER_PASSWORD", SECRET),
            ("CAMUNDA_WORKER_OAUTH_CLIENT_SECRET", SECRET),
            ("CAMUNDA_WORKER_BEARER_TOKEN", SECRET),
            ("CAMUNDA_WORKER_FOLLOW_UP_ARG", SECRET),
        ],
    );
    assert_eq!(code, Some(0));
    assert!(help.contains("CAMUNDA_WORKER_ENGINE_URL"), "{help}");
    assert_hidden("--help", &help);

    let refused = assert_refused(
        &[
            "--engine-url",
            &format!("http://demo:{SECRET}@127.0.0.1:notaport/"),
        ],
        &[],
        &["--engine-url"],
    );
    assert_hidden("a refused URL's error", &refused);
}

/// A credential given twice — in the URL and by a flag, or differently in two URLs — is refused
/// with one line: the worker does not guess which one is meant.
#[test]
fn credentials_given_twice_are_refused() {
    let url = with_userinfo("http://127.0.0.1:1/engine-rest");
    let other = "http://demo:other@127.0.0.2:1/engine-rest";
    let file = secret_file("pw\n");
    let file = file.path().to_str().unwrap();
    for (args, names) in [
        (
            vec!["--engine-url", &url, "--password", "x"],
            vec!["--engine-url", "--password"],
        ),
        (
            vec!["--engine-url", &url, "--password-file", file],
            vec!["--password"],
        ),
        (
            vec!["--engine-url", &url, "--username", "bob"],
            vec!["--username"],
        ),
        (
            vec!["--engine-url", &url, "--bearer-token", "t"],
            vec!["--bearer-token"],
        ),
        (
            vec!["--engine-url", &format!("{url},{other}")],
            vec!["--engine-url", "different"],
        ),
        (
            vec![
                "--oauth-token-url",
                &format!("http://client:{SECRET}@127.0.0.1:1/token"),
                "--oauth-client-secret",
                "s",
            ],
            vec!["--oauth-token-url", "--oauth-client-secret"],
        ),
        (
            vec!["--engine-url", "http://demo@127.0.0.1:1/engine-rest"],
            vec!["demo", "password"],
        ),
    ] {
        let mut all = args.clone();
        all.push("--print-config");
        let line = assert_refused(&all, &[], &names);
        assert_hidden("the refusal", &line);
    }
}

fn fetch_request() -> FetchAndLockRequest {
    FetchAndLockRequest {
        worker_id: "w".into(),
        max_tasks: 1,
        use_priority: false,
        sorting: Vec::new(),
        async_response_timeout: 0,
        topics: vec![TopicRequest {
            topic_name: "messageSending".into(),
            lock_duration: 1000,
            variables: Some(vec![]),
            filter: Default::default(),
        }],
    }
}

pub(crate) async fn fetch(client: &EngineClient) -> Result<(), EngineError> {
    let node = std::sync::Arc::clone(&client.nodes()[0]);
    client
        .fetch_and_lock(&node, &fetch_request())
        .await
        .map(drop)
}

/// A wiremock engine whose fetchAndLock wants `authorization`.
pub(crate) async fn engine_requiring(authorization: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/engine-rest/external-task/fetchAndLock"))
        .and(header("authorization", authorization))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/engine-rest/external-task/fetchAndLock"))
        .respond_with(ResponseTemplate::new(401))
        .with_priority(10)
        .mount(&server)
        .await;
    server
}

/// `--password-file` and `--oauth-client-secret-file` (and their environment variables): read at
/// start without the trailing newline; unreadable or empty is exit 2 naming the flag; given with
/// the direct flag, exit 2.
#[tokio::test]
async fn password_and_client_secret_files_are_read_at_start() {
    let server = engine_requiring(BASIC).await;
    let file = secret_file(&format!("{SECRET}\n"));
    let path = file.path().to_str().unwrap();
    let url = format!("{}/engine-rest", server.uri());
    let config = config_for(&url, &["--username", "demo", "--password-file", path]);
    fetch(&EngineClient::new(config.engine).unwrap())
        .await
        .expect("the file's password, without its newline");
    let user_in_url = url.replacen("http://", "http://demo@", 1);
    let config = config_for(&user_in_url, &["--password-file", path]);
    fetch(&EngineClient::new(config.engine).unwrap())
        .await
        .expect("the URL's user with the file's password");

    let (code, stdout, stderr) = run(
        &["--print-config"],
        &[
            ("CAMUNDA_WORKER_USERNAME", "demo"),
            ("CAMUNDA_WORKER_PASSWORD_FILE", path),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("password_file = "), "{stdout}");
    assert_hidden("--print-config", &stdout);

    let empty = secret_file("\n");
    let empty = empty.path().to_str().unwrap();
    let missing = "/nonexistent/secret";
    let user = ["--username", "demo"];
    let oauth = [
        "--oauth-token-url",
        "http://127.0.0.1:1/token",
        "--oauth-client-id",
        "w",
    ];
    for (args, flag) in [
        (
            [&user[..], &["--password-file", missing]].concat(),
            "--password-file",
        ),
        (
            [&user[..], &["--password-file", empty]].concat(),
            "--password-file",
        ),
        (
            [&user[..], &["--password-file", path, "--password", "x"]].concat(),
            "--password",
        ),
        (
            [&oauth[..], &["--oauth-client-secret-file", missing]].concat(),
            "--oauth-client-secret-file",
        ),
        (
            [&oauth[..], &["--oauth-client-secret-file", empty]].concat(),
            "--oauth-client-secret-file",
        ),
        (
            [
                &oauth[..],
                &[
                    "--oauth-client-secret-file",
                    path,
                    "--oauth-client-secret",
                    "x",
                ],
            ]
            .concat(),
            "--oauth-client-secret",
        ),
    ] {
        let mut all = args.clone();
        all.push("--print-config");
        assert_refused(&all, &[], &[flag]);
    }
    assert_refused(
        &["--print-config"],
        &[
            ("CAMUNDA_WORKER_USERNAME", "demo"),
            ("CAMUNDA_WORKER_PASSWORD_FILE", empty),
        ],
        &["--password-file", "empty"],
    );
}

/// A follow-up command that writes its environment into a file.
fn env_dumping_command(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let program = dir.join("work.sh");
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\ncat > /dev/null\nenv > {}\necho '{{}}'\n",
            dir.join("env").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    program
}

/// The follow-up command gets the worker's environment without the worker's settings
/// (`CAMUNDA_WORKER_*`), exporter headers and variables that hold the worker's password — except
/// what `--pass-env` names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_gets_no_setting_or_credential_of_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let program = env_dumping_command(dir.path());
    let engine = MockEngine::one_task("k1").await;
    engine.on("message", ResponseTemplate::new(204)).await;
    engine
        .on(
            "process-instance/pi-t1/variables",
            ResponseTemplate::new(204),
        )
        .await;
    let worker = WorkerProcess::spawn_with_env(
        "environment",
        &engine.url(),
        &[
            "--reconcile-interval",
            "0",
            "--correlation-delay",
            "0s",
            "--follow-up-command",
            program.to_str().unwrap(),
            "--pass-env",
            "CAMUNDA_WORKER_PASSED_ON",
        ],
        &[
            ("CAMUNDA_WORKER_USERNAME", "demo"),
            ("CAMUNDA_WORKER_PASSWORD", SECRET),
            ("CAMUNDA_WORKER_PASSED_ON", "yes"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer collector",
            ),
            ("DB_DSN", &format!("postgres://app:{SECRET}@db/app")),
            ("KEPT", "kept"),
        ],
    );
    worker
        .stop_once(WAIT, "the follow-up to be sent", |_| {
            !engine.requests_to("/message").is_empty()
        })
        .await;
    let environment = std::fs::read_to_string(dir.path().join("env")).unwrap();
    let names: Vec<&str> = environment
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .collect();
    assert_hidden("the command's environment", &environment);
    for withheld in [
        "CAMUNDA_WORKER_USERNAME",
        "CAMUNDA_WORKER_PASSWORD",
        "CAMUNDA_WORKER_ENGINE_URL",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "DB_DSN",
    ] {
        assert!(
            !names.contains(&withheld),
            "{withheld} reached the command: {names:?}"
        );
    }
    for kept in ["KEPT", "PATH", "CAMUNDA_WORKER_PASSED_ON"] {
        assert!(names.contains(&kept), "{kept} is passed on: {names:?}");
    }
}

/// No configuration or connection value prints a secret with `{:?}`: the validated config, the
/// client built from it, and the parsed flags.
#[test]
fn no_configuration_value_prints_a_secret() {
    let engine_url = with_userinfo("http://127.0.0.1:1/engine-rest");
    let token_url = format!("http://client:{SECRET}@127.0.0.1:1/token");
    for (url, flags) in [
        (engine_url.as_str(), vec![]),
        (
            "http://127.0.0.1:1/engine-rest",
            vec!["--oauth-token-url", &token_url],
        ),
        (
            "http://127.0.0.1:1/engine-rest",
            vec!["--bearer-token", SECRET],
        ),
        (
            "http://127.0.0.1:1/engine-rest",
            vec!["--username", "demo", "--password", SECRET],
        ),
    ] {
        let config = config_for(url, &flags);
        assert_hidden("Config's Debug", &format!("{config:?}"));
        let client = EngineClient::new(config.engine.clone()).unwrap();
        assert_hidden("EngineClient's Debug", &format!("{client:?}"));
        let mut args = vec!["camunda-worker", "--engine-url", url];
        args.extend(&flags);
        let layers = camunda_worker::config::parse_layers(args).unwrap();
        assert_hidden("the flags' Debug", &format!("{layers:?}"));
    }
}
