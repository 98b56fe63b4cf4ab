//! The order in which the engine hands out tasks (real engine): `--use-priority` and `--sorting`
//! are worker-wide fetch fields, so each test runs a worker with `--max-tasks 1` — each fetch
//! takes one task, the next fetch only once that task's command has run — over four waiting
//! tasks that differ in priority and creation time. The command counts its runs in a file and
//! completes each task with its rank, so history tells in which order the tasks were handed out.

use serde_json::{json, Value};

use crate::complete_kind::{plain_task_bpmn, python_command};
use crate::subscriptions::{deploy, serve_with_flags, start, WAIT};
use crate::support::engine::{shared_engine, Rest};
use crate::support::SHUTDOWN_LIMIT;

/// The four tasks' priorities, in their order of creation: A and D low, B and C high, so that
/// neither creation order nor priority alone gives the same order as both together.
const PRIORITIES: [i64; 4] = [1, 5, 5, 1];

/// Starts one instance per priority of `definition`, one after another, and makes sure each
/// task was created after the one before, as the engine tells its `createTime` (milliseconds):
/// an instance whose task shares its predecessor's millisecond is deleted and started again.
/// Their ids, in order of creation.
async fn start_one_after_another(
    rest: &Rest,
    definition: &str,
    topic: &str,
    name: &str,
) -> Vec<String> {
    let mut instances = Vec::new();
    let mut last_created = String::new();
    for (n, priority) in PRIORITIES.iter().enumerate() {
        let variables = json!({"prio": {"value": priority, "type": "Integer"}});
        let business_key = format!("{name}-{n}");
        loop {
            let instance = start(rest, definition, &business_key, variables.clone()).await;
            let created = create_time(rest, topic, &business_key, *priority).await;
            // One engine, one time zone: its timestamps order as text.
            if created > last_created {
                last_created = created;
                instances.push(instance);
                break;
            }
            let reply = reqwest::Client::new()
                .delete(format!("{}/process-instance/{instance}", rest.url))
                .send()
                .await
                .unwrap();
            assert_eq!(reply.status().as_u16(), 204);
        }
    }
    instances
}

/// The `createTime` of the task of instance `business_key` on `topic`, which has `priority`.
/// Only fetchAndLock tells it (the task query of 7.21 does not): the task is locked for a
/// moment, read and unlocked again, as it was.
async fn create_time(rest: &Rest, topic: &str, business_key: &str, priority: i64) -> String {
    let (status, body) = rest
        .post(
            "external-task/fetchAndLock",
            json!({
                "workerId": "order-probe",
                "maxTasks": 1,
                "topics": [{
                    "topicName": topic,
                    "lockDuration": 60000,
                    "businessKey": business_key,
                    "variables": [],
                }],
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let tasks: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(tasks.as_array().unwrap().len(), 1, "{tasks}");
    assert_eq!(tasks[0]["priority"], json!(priority), "{tasks}");
    let id = tasks[0]["id"].as_str().unwrap();
    let (status, body) = rest
        .post(&format!("external-task/{id}/unlock"), json!({}))
        .await;
    assert_eq!(status, 204, "{body}");
    tasks[0]["createTime"].as_str().unwrap().to_owned()
}

/// The order (indices into [`PRIORITIES`]) in which a worker with `flags` and `--max-tasks 1`
/// was handed the four tasks of a process of test `name`.
async fn handed_out(name: &str, flags: &[&str]) -> Vec<usize> {
    let rest = Rest::new(&shared_engine().url);
    let key = format!("order_{name}");
    let topic = format!("orderTask_{name}");
    let bpmn = plain_task_bpmn(&key, &topic).replacen(
        &format!("camunda:topic=\"{topic}\""),
        &format!("camunda:topic=\"{topic}\" camunda:taskPriority=\"${{prio}}\""),
        1,
    );
    let definition = deploy(&rest, &key, bpmn, None).await;
    let instances = start_one_after_another(&rest, &definition, &topic, name).await;

    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let command = python_command(
        dir.path(),
        "rank.py",
        &format!(
            "import json\nwith open({runs:?}, 'a+') as f:\n    f.write('run\\n')\n    f.seek(0)\n    rank = len(f.readlines())\nprint(json.dumps({{'rank': rank}}))\n",
            runs = runs.to_str().unwrap()
        ),
    );
    let route =
        format!("[[route]]\ntopic = {topic:?}\nkind = \"complete\"\ncommand = [{command:?}]\n");
    let mut all_flags = vec!["--max-tasks", "1"];
    all_flags.extend(flags);
    let (mut worker, _file) = serve_with_flags(&route, &all_flags);
    rest.wait_instances_completed(&instances, WAIT).await;
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));

    let mut ranked = Vec::new();
    for (n, instance) in instances.iter().enumerate() {
        let found = rest
            .get(
                "history/variable-instance",
                &[("processInstanceId", instance), ("variableName", "rank")],
            )
            .await;
        let rank = found[0]["value"]
            .as_u64()
            .unwrap_or_else(|| panic!("{found}"));
        ranked.push((rank, n));
    }
    ranked.sort_unstable();
    let ranks: Vec<u64> = ranked.iter().map(|(rank, _)| *rank).collect();
    assert_eq!(ranks, [1, 2, 3, 4], "each task ran once");
    ranked.into_iter().map(|(_, n)| n).collect()
}

/// Priority first (the high B and C before the low A and D), then the oldest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_priority_hands_out_high_priorities_first_then_by_create_time_asc() {
    let flags = ["--use-priority", "true", "--sorting", "create-time-asc"];
    assert_eq!(handed_out("priority_asc", &flags).await, [1, 2, 0, 3]);
}

/// Priority first, then the newest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_priority_hands_out_high_priorities_first_then_by_create_time_desc() {
    let flags = ["--use-priority", "true", "--sorting", "create-time-desc"];
    assert_eq!(handed_out("priority_desc", &flags).await, [2, 1, 3, 0]);
}

/// Without priority, the creation order alone: oldest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_priority_create_time_asc_hands_out_the_oldest_first() {
    let flags = ["--use-priority", "false", "--sorting", "create-time-asc"];
    assert_eq!(handed_out("asc", &flags).await, [0, 1, 2, 3]);
}

/// Without priority, the creation order alone: newest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_priority_create_time_desc_hands_out_the_newest_first() {
    let flags = ["--use-priority", "false", "--sorting", "create-time-desc"];
    assert_eq!(handed_out("desc", &flags).await, [3, 2, 1, 0]);
}
