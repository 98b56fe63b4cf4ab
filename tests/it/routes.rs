//! Several routes in one daemon (`[[route]]`): two processes on two topics, each told by its own
//! message, served by one worker with one fetch; and the route lists the worker refuses.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::{config_file, rejects};
use crate::support::engine::{shared_engine, Rest};
use crate::support::mock::MockEngine;
use crate::support::{binary, metric_sum, metric_value, WorkerProcess, SHUTDOWN_LIMIT};

/// How long the instances may take on a shared machine.
const WAIT: Duration = Duration::from_secs(120);

/// Two routes: `a` completes with `route = "a"` and sends its message with `answer`; `b` locks
/// for 30 s, completes with `route = "b"`, runs `command` (fetching `orderId`) and sends its
/// result. The top-level `correlation_delay` is both routes' default.
fn two_routes(
    (topic_a, message_a): (&str, &str),
    (topic_b, message_b): (&str, &str),
    command: &str,
) -> String {
    format!(
        r#"correlation_delay = "0s"

[[route]]
topic = {topic_a:?}
message_name = {message_a:?}
variables = {{ route = "a" }}
message_variables = {{ answer = "from a" }}

[[route]]
topic = {topic_b:?}
message_name = {message_b:?}
lock_duration = "30s"
variables = {{ route = "b" }}
follow_up_command = [{command:?}]
fetch_variables = ["orderId"]
"#
    )
}

/// A follow-up command that reads its task and prints what it saw of it.
fn echo_command(dir: &std::path::Path) -> String {
    let path = dir.join("work.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\nread -r task\ncase \"$task\" in *'\"orderId\":\"'*) echo '{\"sawOrder\": true}';; *) echo '{\"sawOrder\": false}';; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_owned()
}

/// One fetchAndLock asks for every route's topic, each with its own lock duration and the
/// variables its work reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fetch_asks_for_every_routes_topic_with_its_lock_duration_and_variables() {
    let dir = tempfile::tempdir().unwrap();
    let command = echo_command(dir.path());
    let file = config_file(&two_routes(("ta", "ma"), ("tb", "mb"), &command));
    let engine = MockEngine::start(vec![json!([])]).await;
    let worker = engine.worker(&["--config", file.path().to_str().unwrap()]);
    let fetch = engine
        .first_request(worker, "fetchAndLock", Duration::from_secs(20))
        .await;
    assert_eq!(
        fetch.body["topics"],
        json!([
            {"topicName": "ta", "lockDuration": 60000, "variables": []},
            {"topicName": "tb", "lockDuration": 30000, "variables": ["orderId"]},
        ]),
        "{}",
        fetch.body
    );
}

/// The instance's variables as history keeps them: name → value.
async fn history_values(rest: &Rest, instance: &str) -> serde_json::Map<String, Value> {
    crate::complete_kind::history_variables(rest, instance)
        .await
        .into_iter()
        .map(|(name, _type, value)| (name, value))
        .collect()
}

/// Starts `count` instances of `key` with an `orderId`; their ids.
async fn start(rest: &Rest, key: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..count {
        let (status, body) = rest
            .post(
                &format!("process-definition/key/{key}/start"),
                json!({
                    "businessKey": format!("{key}-{n}"),
                    "variables": {"orderId": {"value": format!("o-{n}"), "type": "String"}},
                }),
            )
            .await;
        assert_eq!(status, 200, "start answered {status}: {body}");
        let started: Value = serde_json::from_str(&body).unwrap();
        ids.push(started["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Two processes on two topics, each waiting for its own message, served by one daemon: every
/// instance ends, completed with its own route's variables and told by its own route's message
/// (route b's after its command ran); the metrics count each topic apart; `status` shows each
/// route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_daemon_serves_two_routes_each_with_its_own_topic_message_and_work() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key_a, topic_a, message_a) = rest.deploy_variant("routes_a").await;
    let (key_b, topic_b, message_b) = rest.deploy_variant("routes_b").await;
    let dir = tempfile::tempdir().unwrap();
    let command = echo_command(dir.path());
    let file = config_file(&two_routes(
        (&topic_a, &message_a),
        (&topic_b, &message_b),
        &command,
    ));
    let config = file.path().to_str().unwrap();
    let a = start(&rest, &key_a, 2).await;
    let b = start(&rest, &key_b, 2).await;

    let status = binary()
        .args(["--engine-url", &engine.url, "--config", config, "status"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{out}");
    for (topic, message) in [(&topic_a, &message_a), (&topic_b, &message_b)] {
        assert!(
            out.contains(&format!("route {topic} → message {message}:")),
            "{out}"
        );
        assert!(
            out.contains(&format!("open tasks on topic {topic}: 2 (0 locked")),
            "{out}"
        );
    }

    let mut worker = WorkerProcess::spawn("routes", &engine.url, &["--config", config]);
    let all: Vec<String> = a.iter().chain(&b).cloned().collect();
    rest.wait_instances_completed(&all, WAIT).await;
    for instance in &a {
        let values = history_values(&rest, instance).await;
        assert_eq!(values["route"], json!("a"), "{values:?}");
        assert_eq!(values["answer"], json!("from a"), "{values:?}");
        assert!(
            !values.contains_key("sawOrder"),
            "route a has no work: {values:?}"
        );
    }
    for instance in &b {
        let values = history_values(&rest, instance).await;
        assert_eq!(values["route"], json!("b"), "{values:?}");
        assert_eq!(values["sawOrder"], json!(true), "{values:?}");
        assert!(!values.contains_key("answer"), "{values:?}");
    }

    let metrics = worker
        .scrape_settled("camunda_worker_follow_ups_sent_total", 4.0)
        .await;
    for topic in [&topic_a, &topic_b] {
        let label = format!("topic=\"{topic}\"");
        for counter in [
            "camunda_worker_tasks_completed_total",
            "camunda_worker_follow_ups_sent_total",
        ] {
            assert_eq!(
                metric_sum(&metrics, counter, &[&label]),
                2.0,
                "{counter}{{{label}}}: {metrics}"
            );
        }
    }
    let runs = "camunda_worker_follow_up_work_runs_total";
    let succeeded_b = format!("{runs}{{outcome=\"succeeded\",topic=\"{topic_b}\"}}");
    assert_eq!(metric_value(&metrics, &succeeded_b), 2.0, "{metrics}");
    let topic_a_label = format!("topic=\"{topic_a}\"");
    assert_eq!(
        metric_sum(&metrics, runs, &[&topic_a_label]),
        0.0,
        "route a has no work: {metrics}"
    );
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
}

/// `--print-config` shows every route with every key, the defaults filled in.
#[test]
fn print_config_shows_every_route_with_the_defaults_filled_in() {
    let dir = tempfile::tempdir().unwrap();
    let command = echo_command(dir.path());
    let file = config_file(&two_routes(("ta", "ma"), ("tb", "mb"), &command));
    let output = binary()
        .args(["--config", file.path().to_str().unwrap(), "--print-config"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{out}");
    let routes: Vec<&str> = out.split("[[route]]").skip(1).collect();
    assert_eq!(routes.len(), 2, "{out}");
    for expected in [
        "topic = \"ta\"",
        "message_name = \"ma\"",
        "correlation_delay = \"0s\"",
        "lock_duration = \"1m\"",
        "follow_up_command = []",
        "route = \"a\"  # String",
        "answer = \"from a\"  # String",
    ] {
        assert!(
            routes[0].contains(expected),
            "`{expected}` in: {}",
            routes[0]
        );
    }
    for expected in [
        "topic = \"tb\"",
        "lock_duration = \"30s\"",
        &format!("follow_up_command = [{command:?}]"),
        "fetch_variables = [\"orderId\"]",
    ] {
        assert!(
            routes[1].contains(expected),
            "`{expected}` in: {}",
            routes[1]
        );
    }
}

/// Route lists the worker cannot serve: exit 2, one line naming what is wrong.
#[test]
fn bad_route_lists_exit_2_with_one_line_naming_the_culprit() {
    let route = "[[route]]\ntopic = \"a\"\n";
    for (text, needles) in [
        ("route = []\n", &["`route` is an empty list"][..]),
        ("route = 3\n", &["key `route` must be a list of tables"]),
        (
            &*format!("{route}{route}"),
            &["[[route]] #2 repeats topic \"a\" of [[route]] #1"],
        ),
        (
            &*format!("topic = \"t\"\n{route}"),
            &["the top-level key `topic`", "[[route]]"],
        ),
        (
            "[[route]]\nmessage_name = \"m\"\n",
            &["[[route]] #1", "no `topic`"],
        ),
        (
            &*format!("{route}mesage_name = \"m\"\n"),
            &["[[route]] #1 (topic \"a\")", "unknown key `mesage_name`"],
        ),
        (
            &*format!("{route}correlation_delay = \"soon\"\n"),
            &["(topic \"a\")", "key `correlation_delay`", "soon"],
        ),
        (
            &*format!("{route}lock_duration = \"0s\"\n"),
            &["key `lock_duration`", "from 1s to 24h"],
        ),
        (
            &*format!("{route}fetch_variables = [\"x\"]\n"),
            &["key `fetch_variables`", "follow_up_command"],
        ),
        (
            &*format!("{route}follow_up_command = [\"/no/such/program\"]\n"),
            &["key `follow_up_command`", "/no/such/program"],
        ),
        (
            &*format!("{route}variables = 3\n"),
            &["key `variables` must be a table"],
        ),
        (
            "follow_up_command = 3\n",
            &["key `follow_up_command` must be a string or a list of strings"],
        ),
    ] {
        let file = config_file(text);
        let path = file.path().to_str().unwrap();
        rejects(binary().args(["--config", path, "--print-config"]), needles);
    }
    let file = config_file(route);
    let path = file.path().to_str().unwrap();
    rejects(
        binary().args(["--config", path, "--topic", "t", "--print-config"]),
        &["--topic on the command line", "[[route]]"],
    );
    rejects(
        binary()
            .args(["--config", path, "--print-config"])
            .env("CAMUNDA_WORKER_TOPIC", "t"),
        &["CAMUNDA_WORKER_TOPIC", "[[route]]"],
    );
}
