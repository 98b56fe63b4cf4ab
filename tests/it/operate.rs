//! Operating the worker: health endpoints, the healthcheck subcommand, JSON logs with a span per
//! task, `status`, `start`, and the docker-compose service run as written against the real engine.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::ResponseTemplate;

use crate::support::engine::{free_port, shared_engine, Rest};
use crate::support::mock::{task, MockEngine};
use crate::support::run::metrics_of_a_run_to_completion;
use crate::support::{binary, eventually, WorkerProcess};

const WAIT: Duration = Duration::from_secs(15);

async fn status_of(url: &str) -> u16 {
    match reqwest::get(url).await {
        Ok(reply) => reply.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_follows_the_loop_and_readyz_follows_the_engine() {
    let engine = MockEngine::start(vec![]).await;
    // Down at first: the ping each poll starts with fails like the first polls.
    engine.on_get("engine", ResponseTemplate::new(503)).await;
    engine.fetch_first(3, ResponseTemplate::new(503)).await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut worker = WorkerProcess::spawn(
        "worker",
        &engine.url(),
        &["--metrics-addr", &addr, "--reconcile-interval", "0"],
    );
    let base = format!("http://{addr}");
    eventually(WAIT, "the first failed poll", || async {
        (!engine.requests_to("/fetchAndLock").is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        status_of(&format!("{base}/healthz")).await,
        200,
        "the loop is alive"
    );
    assert_eq!(
        status_of(&format!("{base}/readyz")).await,
        503,
        "the engine is not answering"
    );
    eventually(WAIT, "readiness once the engine answers", || async {
        (status_of(&format!("{base}/readyz")).await == 200).then_some(())
    })
    .await;

    let probe = binary()
        .args(["healthcheck", "--metrics-addr", &addr])
        .output()
        .unwrap();
    assert_eq!(
        probe.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&probe.stdout)
    );
    assert_eq!(worker.terminate(WAIT), Some(0));
    let probe = binary()
        .args(["healthcheck", "--metrics-addr", &addr])
        .output()
        .unwrap();
    assert_eq!(probe.status.code(), Some(1), "nothing listens any more");
    assert!(String::from_utf8_lossy(&probe.stdout).starts_with("unhealthy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_a_span_per_task() {
    let engine = MockEngine::start(vec![json!([task("t9", Some("order-9"))])]).await;
    engine
        .on("external-task/t9/complete", ResponseTemplate::new(204))
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = binary()
        .args([
            "--engine-url",
            &engine.url(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--correlation-delay",
            "0s",
            "--reconcile-interval",
            "0",
        ])
        .env("RUST_LOG", "camunda_worker=debug")
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    eventually(WAIT, "the follow-up", || async {
        (!engine.requests_to("/message").is_empty()).then_some(())
    })
    .await;
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(log.path()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let completed = lines
        .iter()
        .find(|l| l["message"] == "task completed")
        .unwrap_or_else(|| panic!("no 'task completed' event in {text}"));
    let span = &completed["span"];
    assert_eq!(span["name"], "task");
    assert_eq!(span["task_id"], "t9");
    assert_eq!(span["process_instance_id"], "pi-t9");
    assert_eq!(span["business_key"], "order-9");
    assert_eq!(span["topic"], "messageSending");
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["timestamp"].is_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_status_report_what_the_engine_holds() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("status").await;
    let start = binary()
        .args([
            "--engine-url",
            &engine.url,
            "start",
            "--process-key",
            &key,
            "--count",
            "3",
        ])
        .output()
        .unwrap();
    assert!(start.status.success());
    assert_eq!(String::from_utf8_lossy(&start.stdout).lines().count(), 3);
    let summary = String::from_utf8_lossy(&start.stderr);
    assert!(summary.contains("started 3, failed 0"), "{summary}");
    let one = binary()
        .args([
            "--engine-url",
            &engine.url,
            "start",
            "--process-key",
            &key,
            "--business-key",
            "chosen-key",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&one.stdout)
        .trim_end()
        .ends_with(" chosen-key"));

    let status = binary()
        .args([
            "--engine-url",
            &engine.url,
            "--topic",
            &topic,
            "--message-name",
            &message,
            "status",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{out}");
    assert!(
        out.contains(&format!("instances waiting for message {message}: 0")),
        "{out}"
    );
    assert!(
        out.contains(&format!("open tasks on topic {topic}: 4 (0 locked")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "follow-ups owed on topic {topic}: 0 (0 past due, for a reconciler to deliver); work failed for good: 0"
        )),
        "{out}"
    );

    let unknown = binary()
        .args([
            "--engine-url",
            &engine.url,
            "start",
            "--process-key",
            "no_such_process",
        ])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    let error = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        error.contains("cannot start process no_such_process"),
        "{error}"
    );
}

/// The compose file's deploy and worker services, run with their exact command and environment
/// against the bundled engine (the engine address and the metrics listener adapted to this host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_services_run_as_written_against_the_real_engine() {
    let compose: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
            .unwrap(),
    )
    .unwrap();
    let engine = shared_engine();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let service = |name: &str| -> (Vec<String>, BTreeMap<String, String>) {
        let service = &compose["services"][name];
        let command = service["command"]
            .as_sequence()
            .map(|c| c.iter().map(|a| a.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        let environment = service["environment"]
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let key = k.as_str().unwrap().to_owned();
                let value = v
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| serde_yaml::to_string(v).unwrap().trim().to_owned());
                let value = value.replace("http://camunda:8080/engine-rest", &engine.url);
                let value = if key == "CAMUNDA_WORKER_METRICS_ADDR" {
                    metrics_addr.clone()
                } else {
                    value
                };
                (key, value)
            })
            .collect();
        (command, environment)
    };
    let (deploy_command, deploy_env) = service("deploy");
    let (worker_command, worker_env) = service("worker");
    assert_eq!(
        worker_env["CAMUNDA_WORKER_ENGINE_URL"], engine.url,
        "the worker is pointed at the engine"
    );

    let deploy = binary()
        .args(&deploy_command)
        .envs(&deploy_env)
        .output()
        .unwrap();
    assert!(
        deploy.status.success(),
        "{}",
        String::from_utf8_lossy(&deploy.stderr)
    );

    let rest = Rest::new(&engine.url);
    let ids = rest
        .start_instances("message_correlation", "compose", 20)
        .await;
    let mut worker = binary()
        .args(&worker_command)
        .envs(&worker_env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    rest.wait_instances_completed(&ids, Duration::from_secs(120))
        .await;

    let healthcheck: Vec<String> = compose["services"]["worker"]["healthcheck"]["test"]
        .as_sequence()
        .unwrap()
        .iter()
        .skip(2) // "CMD", "/usr/local/bin/camunda-worker"
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let probe = binary()
        .args(&healthcheck)
        .envs(&worker_env)
        .output()
        .unwrap();
    assert_eq!(
        probe.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&probe.stdout)
    );

    std::process::Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(worker.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_count_every_instance_processed_on_the_real_engine() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("metrics").await;
    let ids = rest.start_instances(&key, "metrics", 60).await;
    let metrics = metrics_of_a_run_to_completion(
        &rest,
        &engine.url,
        &topic,
        &message,
        &ids,
        &["--correlation-delay", "300ms"],
    )
    .await;
    let value = |name: &str| crate::support::metric_value(&metrics, name);
    let node = |series: &str| series.replace("NODE", &engine.url);
    assert_eq!(
        value(&node("camunda_worker_tasks_fetched_total{node=\"NODE\"}")),
        60.0,
        "{metrics}"
    );
    assert_eq!(value("camunda_worker_tasks_completed_total"), 60.0);
    assert_eq!(value("camunda_worker_follow_ups_sent_total"), 60.0);
    assert_eq!(
        crate::support::metric_sum(&metrics, "camunda_worker_follow_ups_given_up_total", &[]),
        0.0
    );
    assert_eq!(value("camunda_worker_tasks_in_flight"), 0.0);
    assert_eq!(value(&node("camunda_worker_engine_up{node=\"NODE\"}")), 1.0);
    assert_eq!(value("camunda_worker_task_end_to_end_seconds_count"), 60.0);
    assert_eq!(
        value(&node(
            "camunda_worker_engine_request_duration_seconds_count{endpoint=\"complete\",node=\"NODE\"}"
        )),
        60.0
    );
    assert_eq!(
        value(&node(
            "camunda_worker_engine_request_duration_seconds_count{endpoint=\"message\",node=\"NODE\"}"
        )),
        60.0
    );
    assert!(
        value(&node(
            "camunda_worker_fetch_requests_total{node=\"NODE\",outcome=\"tasks\"}"
        )) >= 1.0
    );
}

/// On a terminal, `start --count` draws a progress bar (run here under a pseudo-terminal made by
/// util-linux `script`); in a pipe it prints only the ids and the summary line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_shows_a_progress_bar_on_a_terminal_only() {
    let engine = MockEngine::start(vec![]).await;
    engine
        .on(
            "process-definition/key/message_correlation/start",
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "pi-1", "businessKey": "k", "ended": false}))
                .set_delay(Duration::from_millis(40)),
        )
        .await;
    let bin = assert_cmd::cargo::cargo_bin("camunda-worker");
    let command = format!(
        "{} --engine-url {} start --count 20 --concurrency 1 >/dev/null",
        bin.display(),
        engine.url()
    );
    let on_terminal = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("util-linux `script` runs the command under a pseudo-terminal");
    let screen = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(on_terminal.status.success(), "{screen}");
    assert!(
        screen.contains("/20 started"),
        "no progress bar drawn: {screen}"
    );
    assert!(screen.contains("started 20, failed 0"), "{screen}");

    let piped = binary()
        .args([
            "--engine-url",
            &engine.url(),
            "start",
            "--count",
            "20",
            "--concurrency",
            "1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains("/20 started"), "a bar in a pipe: {stderr}");
    assert!(stderr.contains("started 20, failed 0"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&piped.stdout).lines().count(), 20);
}

/// The shipped Grafana dashboard and Prometheus alert rules may only name metrics that a running
/// worker really exports: scraped here from a worker at work, not from a list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alert_rules_name_only_metrics_a_running_worker_exports() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("k1"))])]).await;
    engine
        .on("external-task/t1/complete", ResponseTemplate::new(204))
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let mut worker = WorkerProcess::spawn("scraped", &engine.url(), &["--correlation-delay", "0s"]);
    eventually(WAIT, "the follow-up", || async {
        (worker.count("camunda_worker_follow_ups_sent_total").await == 1).then_some(())
    })
    .await;
    let exposition = worker.scrape().await;
    assert_eq!(worker.terminate(WAIT), Some(0));
    let exported: std::collections::BTreeSet<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let named = |text: &str| -> std::collections::BTreeSet<String> {
        regex::Regex::new(r"camunda_worker_[a-z_]+")
            .unwrap()
            .find_iter(text)
            .map(|m| m.as_str().to_owned())
            .collect()
    };
    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/grafana/camunda-worker.json")).unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    collect_queries(&dashboard, &mut queries);
    assert!(queries.len() >= 20, "the dashboard's queries: {queries:?}");
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/prometheus/alerts.yaml")).unwrap(),
    )
    .unwrap();
    let mut alerts = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            alerts.push(rule["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(alerts.len() >= 5, "{alerts:?}");
    for (source, expressions) in [("dashboard", &queries), ("alert rules", &alerts)] {
        let missing: Vec<String> = expressions
            .iter()
            .flat_map(|e| named(e))
            .filter(|name| !exported.contains(name.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "the {source} name metrics the worker does not export: {missing:?}\nexported: {exported:?}"
        );
    }
}

/// Every PromQL expression of a Grafana dashboard (panel targets and variable queries).
fn collect_queries(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("expr", Value::String(text)) => into.push(text.clone()),
                    ("query", Value::String(text)) => into.push(text.clone()),
                    ("query", Value::Object(query)) => {
                        if let Some(Value::String(text)) = query.get("query") {
                            into.push(text.clone());
                        }
                    }
                    _ => collect_queries(item, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_queries(item, into)),
        _ => {}
    }
}
