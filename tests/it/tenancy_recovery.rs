//! Recovery keeps the tenant (real engine): follow-ups lost with a worker killed during their
//! delay are delivered by the next worker's reconciler, each to its own tenant's instance while
//! the other tenants' instances with the same business key wait too; and a route limited to a
//! tenant recovers that tenant's follow-ups only, leaving the others' to another worker.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::subscriptions::{Process, WAIT};
use crate::support::engine::{shared_engine, Rest};
use crate::support::{eventually, settled_total, WorkerProcess, SHUTDOWN_LIMIT};
use crate::tenancy::{
    assert_each_got_its_own_message, ids, live_marker, start_in_each, worker, Instance, TENANTS,
};

/// How long the doomed worker holds its follow-ups: ample time to see every instance wait and
/// kill it before any is sent.
const DOOMED_DELAY: &str = "20s";

/// Follow-ups owed for `instances` and lost: a worker serving their topic (any tenant) completes
/// their tasks and is killed with SIGKILL while it holds the follow-ups in their delay. Returns
/// once every marker is past due (a reconciler's to deliver), with the markers.
async fn lose_follow_ups(rest: &Rest, process: &Process, instances: &[Instance]) -> Vec<String> {
    let flags = [
        "--correlate-by",
        "business-key",
        "--correlation-delay",
        DOOMED_DELAY,
        "--reconcile-interval",
        "0",
    ];
    let (mut doomed, _file) = worker("doomed", &process.route(""), &flags);
    let mut markers = Vec::new();
    for instance in instances {
        let marker = eventually(WAIT, "every instance to wait, owed", || async {
            live_marker(rest, &instance.id)
                .await
                .filter(|m| m.starts_with("owed:"))
        })
        .await;
        markers.push(marker);
    }
    doomed.kill_hard();
    for (instance, marker) in instances.iter().zip(&markers) {
        assert_eq!(
            live_marker(rest, &instance.id).await.as_ref(),
            Some(marker),
            "killed before the delay ended: the follow-up is still owed"
        );
    }
    // `owed:<topic>:<due, Unix ms>:<task id>`: a reconciler takes a marker over once it is due.
    let due = markers
        .iter()
        .map(|m| m.split(':').nth(2).unwrap().parse::<u128>().unwrap())
        .max()
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "the markers to fall due",
        || async {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            (now.as_millis() > due).then_some(())
        },
    )
    .await;
    markers
}

/// The next worker after a crash, reconciling every second, serving `process` with `keys`.
fn next_worker(
    name: &str,
    process: &Process,
    keys: &str,
) -> (WorkerProcess, tempfile::NamedTempFile) {
    let flags = [
        "--correlate-by",
        "business-key",
        "--correlation-delay",
        "0s",
        "--reconcile-interval",
        "1s",
    ];
    worker(name, &process.route(keys), &flags)
}

/// Follow-ups recovered by `worker`, once they reached `expected`.
async fn recovered(worker: &WorkerProcess, expected: u64) -> u64 {
    settled_total(
        &[worker],
        &["camunda_worker_follow_ups_recovered_total"],
        expected,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_lost_in_a_crash_are_recovered_each_into_its_own_tenants_instance() {
    let rest = Rest::new(&shared_engine().url);
    let process = Process::named("tenancy_recovery");
    let instances = start_in_each(&rest, &process, &TENANTS, &["lost"]).await;
    lose_follow_ups(&rest, &process, &instances).await;
    let (mut next, _file) = next_worker("next", &process, "");
    rest.wait_instances_completed(&ids(&instances), WAIT).await;
    assert_eq!(recovered(&next, 3).await, 3);
    assert_eq!(next.terminate(SHUTDOWN_LIMIT), Some(0));
    assert_each_got_its_own_message(&rest, &instances).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_limited_to_a_tenant_recovers_only_that_tenants_follow_ups() {
    let rest = Rest::new(&shared_engine().url);
    let process = Process::named("tenancy_recovery_scope");
    let instances = start_in_each(&rest, &process, &TENANTS[..2], &["owed"]).await;
    let markers = lose_follow_ups(&rest, &process, &instances).await;
    let (a, b) = (&instances[0], &instances[1]);

    let (mut only_a, _file) = next_worker("only-a", &process, "tenant_ids = [\"tenant-a\"]");
    rest.wait_instances_completed(std::slice::from_ref(&a.id), WAIT)
        .await;
    // Passes after the one that delivered a's: each sees b's marker past due, and leaves it.
    let passes = "camunda_worker_reconciler_passes_total{outcome=\"ok\"}";
    let before = only_a.count(passes).await;
    eventually(WAIT, "two more reconciler passes", || async {
        (only_a.count(passes).await >= before + 2).then_some(())
    })
    .await;
    assert_eq!(recovered(&only_a, 1).await, 1);
    assert_eq!(only_a.terminate(SHUTDOWN_LIMIT), Some(0));
    assert_eq!(
        live_marker(&rest, &b.id).await.as_ref(),
        Some(&markers[1]),
        "tenant-b's follow-up is still owed, left for another worker"
    );

    let (mut only_b, _file) = next_worker("only-b", &process, "tenant_ids = [\"tenant-b\"]");
    rest.wait_instances_completed(std::slice::from_ref(&b.id), WAIT)
        .await;
    assert_eq!(recovered(&only_b, 1).await, 1);
    assert_eq!(only_b.terminate(SHUTDOWN_LIMIT), Some(0));
    assert_each_got_its_own_message(&rest, &instances).await;
}
