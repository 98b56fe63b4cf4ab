//! Replicas whose clocks disagree by a minute either way agree on what is overdue: the marker's
//! due time follows the engine's clock (read from its replies' `Date` headers), not each
//! replica's. Each replica runs under libfaketime (Debian's `faketime`, installed by
//! scripts/test.sh), one a minute ahead and one a minute behind. Were due times local, the one
//! ahead would find every marker of the one behind overdue by two minutes as soon as it was
//! written: its reconciler would run their work a second time under a live lease, and send
//! messages before their delay.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::engine::{shared_engine, Rest};
use crate::support::work::{looping_bpmn, python as python_path, Script, PRELUDE, RECOVERED};
use crate::support::{metric_sum, WorkerProcess, SHUTDOWN_LIMIT};

/// libfaketime's preload library, from Debian's `faketime` package; its absence fails the test.
fn libfaketime() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
        .find(|path| path.exists());
    found.expect(
        "libfaketime is missing: install Debian's faketime package (scripts/test.sh does, as root)",
    )
}

/// A worker binary whose clock is off by `skew` (libfaketime's syntax: "+60s", "-60s"); the
/// monotonic clock is left alone, so its timers run as usual.
fn skewed_worker(name: &str, skew: &str, engine_url: &str, flags: &[&str]) -> WorkerProcess {
    let preload = libfaketime();
    WorkerProcess::spawn_with_env(
        name,
        engine_url,
        flags,
        &[
            ("LD_PRELOAD", preload.to_str().unwrap()),
            ("FAKETIME", skew),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )
}

/// A Python work ([`crate::support::work::PRELUDE`], then `body`) started through a shell that
/// drops libfaketime first: the skew is the worker's, and Python's sleep fails under it
/// (EINVAL from libfaketime 0.9.10 with the monotonic clock left alone).
fn unskewed_work(body: &str) -> Script {
    let script = Script::write(
        "#!/bin/sh\nexec env -u LD_PRELOAD -u FAKETIME -u FAKETIME_DONT_FAKE_MONOTONIC \"$PYTHON\" \"$(dirname \"$0\")/work.py\" \"$@\"\n",
    );
    let python = format!("{PRELUDE}\n{body}\n");
    std::fs::write(script.file("work.py"), python).unwrap();
    let text = std::fs::read_to_string(script.program()).unwrap();
    std::fs::write(script.program(), text.replace("$PYTHON", python_path())).unwrap();
    script
}

/// Two replicas, a minute ahead and a minute behind, serve `flags`; once `ids` have completed,
/// neither has recovered a follow-up (no reconciler stepped in: nothing was overdue), and each
/// exits 0.
async fn serve_skewed(
    rest: &Rest,
    flags: &[&str],
    ids_of: impl std::future::Future<Output = Vec<String>>,
) {
    let url = &shared_engine().url;
    let mut ahead = skewed_worker("ahead", "+60s", url, flags);
    let mut behind = skewed_worker("behind", "-60s", url, flags);
    let ids = ids_of.await;
    rest.wait_instances_completed(&ids, Duration::from_secs(120))
        .await;
    for worker in [&mut ahead, &mut behind] {
        let metrics = worker.scrape().await;
        assert_eq!(
            metric_sum(&metrics, RECOVERED, &[]),
            0.0,
            "{}: a reconciler took over a follow-up that was not overdue; log:\n{}",
            worker.name,
            worker.stderr()
        );
        assert_eq!(
            worker.terminate(SHUTDOWN_LIMIT),
            Some(0),
            "{}",
            worker.stderr()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_process_gets_each_work_once_and_one_message_per_round_from_skewed_replicas() {
    let rest = Rest::new(&shared_engine().url);
    let (key, topic, message) = (
        "clock_skew_loop".to_owned(),
        "clock_skew_loop_task".to_owned(),
        "clock_skew_loop_done".to_owned(),
    );
    rest.deploy_bpmn(&key, looping_bpmn(&key, &topic, &message, 3))
        .await;
    // Each work takes 3 s under a lease of 8 s renewed every 2 s; the reconcilers pass every
    // second.
    let script = unskewed_work("time.sleep(3)\nprint('{}')");
    let mut flags = vec![
        "--topic",
        &topic,
        "--message-name",
        &message,
        "--correlation-delay",
        "0s",
        "--follow-up-lease",
        "8s",
        "--reconcile-interval",
        "1s",
    ];
    flags.extend(script.flags());
    serve_skewed(&rest, &flags, rest.start_instances(&key, "skew-loop", 4)).await;

    let mut runs = script.lines("runs");
    assert_eq!(
        runs.len(),
        12,
        "4 instances × 3 rounds, each work once: {runs:?}"
    );
    runs.sort_unstable();
    runs.dedup();
    assert_eq!(runs.len(), 12, "12 different tasks: {runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correlation_delay_is_kept_by_skewed_replicas() {
    let rest = Rest::new(&shared_engine().url);
    let (key, topic, message) = rest.deploy_variant("clock_skew_delay").await;
    // A delay of 5 s: from the replica a minute ahead, a marker of the one behind looks two
    // minutes overdue when it is written.
    let flags = [
        "--topic",
        &topic,
        "--message-name",
        &message,
        "--correlation-delay",
        "5s",
        "--reconcile-interval",
        "1s",
    ];
    serve_skewed(&rest, &flags, rest.start_instances(&key, "skew-delay", 10)).await;
}
