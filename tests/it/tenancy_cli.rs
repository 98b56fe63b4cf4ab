//! The CLI's tenants (real engine): `deploy --tenant-id` and `start --tenant-id` create what the
//! engine then shows in that tenant, and `status` splits a route's counts by tenant.

use std::io::Write;

use serde_json::json;

use crate::subscriptions::{deploy, start, Process, WAIT};
use crate::support::binary;
use crate::support::engine::{shared_engine, Rest};
use crate::support::{eventually, SHUTDOWN_LIMIT};
use crate::tenancy::worker;

/// Runs the binary against the shared engine with `args`; (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let output = binary()
        .args(["--engine-url", &shared_engine().url])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `deploy --tenant-id` of `process`'s BPMN (from a file) for `tenant`; its stdout.
fn deploy_for(process: &Process, tenant: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{}.bpmn", process.key));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(process.bpmn(|b| b).as_bytes())
        .unwrap();
    let (code, out, err) = run(&["deploy", "--tenant-id", tenant, path.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    out
}

/// `start --tenant-id` of `count` instances; the instance ids it printed.
fn start_for(process: &Process, tenant: &str, count: &str) -> Vec<String> {
    let (code, out, err) = run(&[
        "start",
        "--process-key",
        &process.key,
        "--tenant-id",
        tenant,
        "--count",
        count,
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    out.lines()
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
}

/// The ids of the running instances of `process` in `tenant`, as the engine lists them.
async fn instances_in(rest: &Rest, process: &Process, tenant: &str) -> Vec<String> {
    let found = rest
        .get(
            "process-instance",
            &[
                ("processDefinitionKey", &process.key),
                ("tenantIdIn", tenant),
            ],
        )
        .await;
    let mut ids: Vec<String> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// `status` of `process`'s route with `keys`: its lines between the engine's and the incidents'.
fn status_of_route(process: &Process, keys: &str) -> Vec<String> {
    let file = crate::cli::config_file(&process.route(keys));
    let (code, out, err) = run(&["--config", file.path().to_str().unwrap(), "status"]);
    assert_eq!(code, Some(0), "{out}{err}");
    out.lines()
        .filter(|l| !l.starts_with("engine: ") && !l.starts_with("open incidents: "))
        .filter(|l| !l.starts_with("  see Cockpit"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_and_start_for_a_tenant_land_in_that_tenant() {
    let rest = Rest::new(&shared_engine().url);
    let process = Process::named("tenancy_cli_deploy");
    for tenant in ["tenant-a", "tenant-b"] {
        let out = deploy_for(&process, tenant);
        assert!(
            out.contains(&format!("deployed {} version 1", process.key))
                && out.trim_end().ends_with(&format!("for tenant {tenant}")),
            "{out}"
        );
    }
    let definitions = rest
        .get("process-definition", &[("key", &process.key)])
        .await;
    let mut tenants: Vec<&str> = definitions
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["tenantId"].as_str().unwrap())
        .collect();
    tenants.sort_unstable();
    assert_eq!(tenants, ["tenant-a", "tenant-b"], "{definitions}");

    let mut in_a = start_for(&process, "tenant-a", "2");
    let mut in_b = start_for(&process, "tenant-b", "1");
    in_a.sort();
    in_b.sort();
    assert_eq!(in_a.len(), 2);
    assert_eq!(instances_in(&rest, &process, "tenant-a").await, in_a);
    assert_eq!(instances_in(&rest, &process, "tenant-b").await, in_b);

    // Without a tenant the key names two definitions: the engine refuses, the CLI says so.
    let (code, out, err) = run(&["start", "--process-key", &process.key]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(&format!("cannot start process {}", process.key)),
        "{err}"
    );
}

/// Tenant-a's two instances wait for their messages (a worker serving tenant-a holds their
/// follow-ups in a long delay), tenant-b's one task is open, and so is the task of an instance
/// without a tenant: `status` prints the route's totals, then one line per tenant. A route
/// limited to tenant-b counts tenant-b's only, totals included; a route without tenant counts
/// the instance without one and prints no tenant line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_splits_a_routes_counts_by_tenant() {
    let rest = Rest::new(&shared_engine().url);
    let process = Process::named("tenancy_cli_status");
    deploy_for(&process, "tenant-a");
    deploy_for(&process, "tenant-b");
    let waiting = start_for(&process, "tenant-a", "2");
    start_for(&process, "tenant-b", "1");
    let shared = deploy(&rest, &process.key, process.bpmn(|b| b), None).await;
    start(&rest, &shared, "no-tenant", json!({})).await;
    let flags = ["--correlation-delay", "1h", "--reconcile-interval", "0"];
    let only_a = process.route("tenant_ids = [\"tenant-a\"]");
    let (mut holder, _file) = worker("holder", &only_a, &flags);
    let subscriptions = |tenant: &'static str| {
        let rest = rest.clone();
        let message = process.message.clone();
        async move {
            rest.count(
                "event-subscription/count",
                &[("eventName", &message), ("tenantIdIn", tenant)],
            )
            .await
        }
    };
    eventually(WAIT, "tenant-a's instances to wait", || async {
        (subscriptions("tenant-a").await == waiting.len() as u64).then_some(())
    })
    .await;

    let (topic, message) = (&process.topic, &process.message);
    let (code, out, err) = run(&["--topic", topic, "--message-name", message, "status"]);
    assert_eq!(code, Some(0), "{out}{err}");
    for line in [
        format!("instances waiting for message {message}: 2"),
        format!("open tasks on topic {topic}: 2 (0 locked, 0 without retries left)"),
        format!("follow-ups owed on topic {topic}: 2 (0 past due, for a reconciler to deliver); work failed for good: 0"),
        "  tenant tenant-a: 2 waiting, 0 open tasks (0 locked, 0 without retries left), 2 follow-ups owed (0 past due), 0 failed".to_owned(),
        "  tenant tenant-b: 0 waiting, 1 open tasks (0 locked, 0 without retries left), 0 follow-ups owed (0 past due), 0 failed".to_owned(),
    ] {
        assert!(out.lines().any(|l| l == line), "no line {line:?} in:\n{out}");
    }

    let only_b = status_of_route(&process, "tenant_ids = [\"tenant-b\"]");
    assert_eq!(
        only_b,
        [
            format!("instances waiting for message {message}: 0"),
            format!("open tasks on topic {topic}: 1 (0 locked, 0 without retries left)"),
            format!("follow-ups owed on topic {topic}: 0 (0 past due, for a reconciler to deliver); work failed for good: 0"),
            "  tenant tenant-b: 0 waiting, 1 open tasks (0 locked, 0 without retries left), 0 follow-ups owed (0 past due), 0 failed".to_owned(),
        ]
    );
    let without = status_of_route(&process, "without_tenant_id = true");
    assert_eq!(
        without,
        [
            format!("instances waiting for message {message}: 0"),
            format!("open tasks on topic {topic}: 1 (0 locked, 0 without retries left)"),
            format!("follow-ups owed on topic {topic}: 0 (0 past due, for a reconciler to deliver); work failed for good: 0"),
        ]
    );
    assert_eq!(holder.terminate(SHUTDOWN_LIMIT), Some(0));
}

/// A tenant id becomes a segment of the start call's path: one that could not be is refused
/// before any call, exit 2, one line naming the flag.
#[test]
fn a_tenant_id_that_cannot_be_a_path_segment_is_refused_naming_the_flag() {
    for command in ["deploy", "start"] {
        crate::cli::rejects(
            binary().args([
                "--engine-url",
                "http://127.0.0.1:9/engine-rest",
                command,
                "--tenant-id",
                "a/b",
            ]),
            &["--tenant-id", "a/b"],
        );
    }
}
