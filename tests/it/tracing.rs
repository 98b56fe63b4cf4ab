//! OpenTelemetry traces (issue 27), against a real receiver: Jaeger v2 (`support/jaeger.rs`) and
//! the real engine. The worker binary runs with the standard `OTEL_*` variables; the tests read
//! the spans back from Jaeger's query API and judge the traces by their structure (parents,
//! links, attributes), the follow-up command by the environment it saw, and a receiver that is
//! down by the worker's counters and the engine's state.

use std::collections::HashSet;

use serde_json::json;

use crate::support::engine::{free_port, shared_engine, Rest};
use crate::support::jaeger::{Jaeger, StoredSpan};
use crate::support::work::{start_instance, task_id_of, worker_flags, Script, WAIT};
use crate::support::{eventually, settled_total, WorkerProcess, SHUTDOWN_LIMIT};

/// A service name of this test's own, so that each test reads only its spans.
fn service(test: &str) -> String {
    format!("cw-{test}-{}", std::process::id())
}

/// The spans named `name`.
fn named<'a>(spans: &'a [StoredSpan], name: &str) -> Vec<&'a StoredSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// The span of `trace` named `name` whose parent is `parent`; panics unless there is exactly one.
fn child<'a>(spans: &'a [StoredSpan], parent: &StoredSpan, name: &str) -> &'a StoredSpan {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.name == name && s.parent_span_id == parent.span_id)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {name} under {} {}: {spans:#?}",
        parent.name,
        parent.span_id
    );
    found[0]
}

/// Whether every task of `tasks` has its whole trace in `spans`: task, complete, follow-up with
/// its wait, work and message.
fn traces_complete(spans: &[StoredSpan], tasks: &HashSet<String>) -> bool {
    tasks.iter().all(|task| {
        let Some(root) = spans
            .iter()
            .find(|s| s.name == "task" && s.attribute("task_id") == task)
        else {
            return false;
        };
        let in_trace: HashSet<&str> = spans
            .iter()
            .filter(|s| s.trace_id == root.trace_id)
            .map(|s| s.name.as_str())
            .collect();
        ["complete", "follow_up", "wait", "work", "correlate_message"]
            .iter()
            .all(|name| in_trace.contains(name))
    })
}

/// One trace per task, from its lock on: the task span (task id, topic, business key, process
/// instance, outcome) is the root, linked to the fetch that locked it (a trace of its own);
/// `complete` and the follow-up are its children, and the follow-up holds its wait, its work and
/// its message. The command gets the `TRACEPARENT` of its work span, and none of the exporter's
/// settings (its headers carry a credential here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_spans_arrive_as_one_trace_linked_to_its_fetch_and_the_command_joins_it() {
    let jaeger = Jaeger::start().await;
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("tracing_trace").await;
    let script = Script::python(
        r#"
seen = {k: v for k, v in os.environ.items() if k.startswith("OTEL") or k.startswith("TRACE")}
with open(path(task["taskId"] + ".env.json"), "w") as f:
    json.dump(seen, f)
print("{}")
"#,
    );
    let name = service("trace");
    let secret = "authorization=Bearer collector-s3cret";
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_HEADERS", secret),
        ("OTEL_SERVICE_NAME", name.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let mut instances = Vec::new();
    for n in 0..3 {
        let business_key = format!("order-{n}");
        let id = start_instance(&rest, &key, &business_key, json!({})).await;
        instances.push((id, business_key));
    }
    let flags = worker_flags(&topic, &message, &script);
    let mut worker = WorkerProcess::spawn_with_env("traced", &engine.url, &flags, &env);
    let ids: Vec<String> = instances.iter().map(|(id, _)| id.clone()).collect();
    rest.wait_instances_completed(&ids, WAIT).await;
    let mut tasks = HashSet::new();
    for id in &ids {
        tasks.insert(task_id_of(&rest, id).await);
    }
    let spans = jaeger
        .wait_for(&name, "every task's whole trace in Jaeger", |spans| {
            traces_complete(spans, &tasks)
        })
        .await;

    for (instance, business_key) in &instances {
        let task_id = task_id_of(&rest, instance).await;
        let roots: Vec<_> = named(&spans, "task")
            .into_iter()
            .filter(|s| s.attribute("task_id") == task_id)
            .collect();
        assert_eq!(roots.len(), 1, "one task span for {task_id}");
        let task = roots[0];
        assert_eq!(task.parent_span_id, "", "the task span is its trace's root");
        assert_eq!(task.attribute("topic"), topic);
        assert_eq!(task.attribute("business_key"), business_key);
        assert_eq!(task.attribute("process_instance_id"), instance);
        assert!(
            task.attribute("outcome").starts_with("Completed"),
            "{task:?}"
        );
        // Linked to the fetch that locked it, which is a trace of its own.
        assert_eq!(task.links.len(), 1, "{task:?}");
        let (link_trace, link_span) = &task.links[0];
        let fetch = spans
            .iter()
            .find(|s| &s.span_id == link_span && &s.trace_id == link_trace)
            .expect("the linked fetch span is in Jaeger");
        assert_eq!(fetch.name, "fetch");
        assert_ne!(fetch.trace_id, task.trace_id);

        child(&spans, task, "complete");
        let follow_up = child(&spans, task, "follow_up");
        assert_eq!(follow_up.attribute("task_id"), task_id);
        assert_eq!(follow_up.attribute("outcome"), "Sent");
        child(&spans, follow_up, "wait");
        child(&spans, follow_up, "correlate_message");
        let work = child(&spans, follow_up, "work");

        // The command saw the work span as its parent, and nothing of the exporter.
        let seen: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(script.file(&format!("{task_id}.env.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            seen["TRACEPARENT"],
            json!(format!("00-{}-{}-01", work.trace_id, work.span_id))
        );
        let leaked: Vec<&String> = seen
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("OTEL_EXPORTER"))
            .collect();
        assert!(leaked.is_empty(), "the command saw {leaked:?}");
        assert!(!seen.to_string().contains("s3cret"));
    }
    let metrics = worker.scrape().await;
    assert!(
        worker
            .metric("camunda_worker_trace_spans_exported_total")
            .await
            >= 18.0
    );
    for reason in ["queue_full", "export_failed"] {
        let series = format!("camunda_worker_trace_spans_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(worker.metric(&series).await, 0.0, "{metrics}");
    }
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    assert!(!worker.stderr().contains("s3cret"));
}

/// A receiver that is down costs the spans, counted, and nothing else: every instance completes
/// and gets its message, and the worker stops at once on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_costs_a_counter_and_nothing_else() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("tracing_down").await;
    // Nobody listens on this port.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let ids = rest.start_instances(&key, "tracing_down", 30).await;
    let flags = [
        "--topic",
        &topic,
        "--message-name",
        &message,
        "--correlation-delay",
        "0s",
    ];
    let mut worker = WorkerProcess::spawn_with_env("untraced", &engine.url, &flags, &env);
    rest.wait_instances_completed(&ids, WAIT).await;
    let failed = "camunda_worker_trace_spans_dropped_total{reason=\"export_failed\"}";
    eventually(WAIT, "the lost spans counted", || async {
        (worker.metric(failed).await > 0.0).then_some(())
    })
    .await;
    let sent = format!("camunda_worker_follow_ups_sent_total{{topic=\"{topic}\"}}");
    assert_eq!(worker.metric(&sent).await, 30.0);
    assert_eq!(
        worker
            .metric("camunda_worker_trace_spans_exported_total")
            .await,
        0.0
    );
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
}

/// No trace context is stored in the engine: a follow-up that another replica recovers (its
/// worker died between `complete` and the message) starts a trace of its own, whose follow-up
/// span carries the task id that finds the task's trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_follow_up_starts_a_trace_of_its_own_carrying_the_task_id() {
    let jaeger = Jaeger::start().await;
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("tracing_recovered").await;
    let ids = rest.start_instances(&key, "tracing_recovered", 2).await;
    let traced = |name: &str| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_endpoint.clone()),
            ("OTEL_SERVICE_NAME", service(name)),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ]
    };
    let spawn = |name: &str, delay: &str, reconcile: &str| {
        let env = traced(name);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let flags = [
            "--topic",
            &topic,
            "--message-name",
            &message,
            "--correlation-delay",
            delay,
            "--reconcile-interval",
            reconcile,
        ];
        WorkerProcess::spawn_with_env(name, &engine.url, &flags, &env)
    };
    // The first worker completes both tasks and holds their messages for 5 s: killed before,
    // it loses them. The next worker's reconciler finds them once they are past due (the delay
    // and the recovery grace, about 35 s).
    let mut doomed = spawn("doomed", "5s", "0");
    assert_eq!(
        settled_total(&[&doomed], &["camunda_worker_tasks_completed_total"], 2).await,
        2
    );
    doomed.kill_hard();
    assert_eq!(
        rest.completed(&key).await,
        0,
        "killed before it sent a message"
    );
    let next = spawn("next", "0s", "2s");
    rest.wait_instances_completed(&ids, WAIT).await;
    let mut tasks = HashSet::new();
    for id in &ids {
        tasks.insert(task_id_of(&rest, id).await);
    }
    let spans = jaeger
        .wait_for(
            &service("next"),
            "the recovered follow-ups' spans",
            |spans| {
                tasks.iter().all(|task| {
                    spans.iter().any(|s| {
                        s.name == "follow_up"
                            && s.attribute("task_id") == task
                            && s.attribute("outcome") == "Delivered"
                    })
                })
            },
        )
        .await;
    for task in &tasks {
        let follow_up = spans
            .iter()
            .find(|s| s.name == "follow_up" && s.attribute("task_id") == task)
            .unwrap();
        assert_eq!(follow_up.parent_span_id, "", "a root: {follow_up:?}");
        child(&spans, follow_up, "correlate_message");
        assert!(
            !spans
                .iter()
                .any(|s| s.name == "task" && s.attribute("task_id") == task),
            "the replica that recovered it never locked the task"
        );
    }
    assert_eq!(
        settled_total(&[&next], &["camunda_worker_follow_ups_recovered_total"], 2).await,
        2
    );
    drop(next);
}

/// A tracing setting the worker cannot use is refused at start, in one line naming the variable
/// (and not its value: an endpoint may hold credentials).
#[test]
fn a_tracing_setting_that_cannot_work_is_refused_in_one_line() {
    let output = crate::support::binary()
        .args(["--engine-url", "http://127.0.0.1:9/engine-rest"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "collector.internal:4318")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        "error: OTEL_EXPORTER_OTLP_ENDPOINT: not an http:// or https:// URL"
    );
    let output = crate::support::binary()
        .args(["--engine-url", "http://127.0.0.1:9/engine-rest"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "error: OTEL_EXPORTER_OTLP_PROTOCOL: `grpc` is not supported: the worker sends OTLP over http/protobuf"
    );
}
