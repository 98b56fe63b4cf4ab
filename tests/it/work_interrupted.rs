//! The follow-up's work cut short: killed with `kill -9` (another worker runs it again and the
//! instance ends once), stopped with SIGTERM (within the grace, and the next start finishes it; a
//! command that ignores SIGTERM is killed at the grace's end), and the programs a shell command
//! started end with it. Real engine, worker binary, commands as in `work.rs`.

use std::time::Duration;

use serde_json::json;

use crate::support::engine::{shared_engine, Rest};
use crate::support::work::{
    assert_one_message, assert_variable, delete_instance, history_variables, lease_of, marker_of,
    owed_due, python, runs_of, start_instance, task_id_of, unix_ms, wait_gone, waits_for,
    worker_flags, Script, FOLLOW_UPS_SENT, MARKER, PASSES, RECOVERED, RUNNING, WAIT,
};
use crate::support::{eventually, lines_with, metric_sum, WorkerProcess, SHUTDOWN_LIMIT};

/// `kill -9` while the command runs: a second worker, whose reconciler passes come after the first
/// lease would have run out, leaves the work alone while the first renews the lease; once the
/// first is killed and the lease has run out, the second runs the work again, and the instance
/// gets exactly one message, with the second run's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_during_the_command_another_worker_runs_it_again_and_the_instance_ends_once()
{
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("work_kill").await;
    let script = Script::python(
        r#"
if RUN == 1:
    append("pids", str(os.getpid()))
    time.sleep(300)
json.dump({"run": RUN}, sys.stdout)
"#,
    );
    let instance = start_instance(&rest, &key, "work-kill-1", json!({})).await;
    let mut flags = worker_flags(&topic, &message, &script);
    flags.extend(["--follow-up-lease", "3s", "--reconcile-interval", "1s"]);
    let mut first = WorkerProcess::spawn("first", &engine.url, &flags);
    script.wait_pids(1).await;
    let task_id = task_id_of(&rest, &instance).await;
    let first_due = owed_due(&marker_of(&rest, &instance).await, &topic, &task_id);

    // The second worker fetches nothing, so its reconciler's passes grow apart (1 s, then 4 s,
    // 16 s, ...): its second pass, 4 s after its start, comes after the first, unrenewed lease
    // of 3 s would have run out; the pass after it comes after the kill.
    let mut second = WorkerProcess::spawn("second", &engine.url, &flags);
    let passes = |metrics: &str| metric_sum(metrics, PASSES, &["outcome=\"ok\""]);
    eventually(
        WAIT,
        "the second worker's reconciler made 2 passes",
        || async { (passes(&second.scrape().await) >= 2.0).then_some(()) },
    )
    .await;
    assert_eq!(
        script.lines("runs").len(),
        1,
        "while the first worker renews its lease, nobody runs the work again"
    );
    let lease = lease_of(&rest, &instance).await.expect("a lease written");
    let due = owed_due(&lease, &topic, &task_id);
    assert!(
        due > first_due && due > unix_ms(),
        "the lease was renewed and is held: due {due}, the marker's first due {first_due}"
    );
    first.assert_running("before the kill");
    first.kill_hard();

    rest.wait_instances_completed(std::slice::from_ref(&instance), WAIT)
        .await;
    assert_eq!(
        script.lines("runs"),
        vec![task_id.clone(), task_id.clone()],
        "the work ran twice, for the same task"
    );
    let variables = history_variables(&rest, &instance).await;
    assert_variable(&variables, "run", "Integer", json!(2));
    assert_variable(
        &variables,
        MARKER,
        "String",
        json!(format!("delivered:{task_id}")),
    );
    assert_one_message(&rest, &instance).await;
    let metrics = second.scrape_settled(FOLLOW_UPS_SENT, 1.0).await;
    assert_eq!(metric_sum(&metrics, FOLLOW_UPS_SENT, &[]), 1.0, "{metrics}");
    assert_eq!(metric_sum(&metrics, RECOVERED, &[]), 1.0, "{metrics}");
    assert_eq!(runs_of(&metrics, "succeeded"), 1.0, "{metrics}");
    assert_eq!(second.terminate(SHUTDOWN_LIMIT), Some(0));
}

/// SIGTERM while a long command runs: the command gets SIGTERM (and, a Python script, ends), the
/// worker exits well within the grace, and leaves the follow-up owed and due now; the next start,
/// the command now fast, finishes the instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_long_command_exits_within_the_grace_and_the_next_start_finishes_it() {
    sigterm_during_a_long_command("work_sigterm", false).await;
}

/// The same with a command that ignores SIGTERM: it is killed at the end of the grace, the worker
/// still exits within it (exit 1: something had to be abandoned, as README says), the follow-up
/// stays owed, and the next start finishes the instance. (Handing the lease back is not asserted
/// here: at the end of the grace it is a last try, and otherwise the 3 s lease runs out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_ignores_sigterm_is_killed_at_the_end_of_the_grace() {
    sigterm_during_a_long_command("work_sigterm_ignored", true).await;
}

async fn sigterm_during_a_long_command(suffix: &str, ignores_sigterm: bool) {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant(suffix).await;
    let setup = if ignores_sigterm {
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    } else {
        "pass"
    };
    let script = Script::python(&format!(
        r#"
if RUN == 1:
    {setup}
    append("pids", str(os.getpid()))
    time.sleep(60)
json.dump({{"run": RUN}}, sys.stdout)
"#
    ));
    let instance = start_instance(&rest, &key, &format!("{suffix}-1"), json!({})).await;
    let mut flags = worker_flags(&topic, &message, &script);
    flags.extend([
        "--shutdown-grace",
        "3s",
        "--follow-up-lease",
        if ignores_sigterm { "3s" } else { "60s" },
        "--reconcile-interval",
        "1s",
    ]);
    let mut first = WorkerProcess::spawn("first", &engine.url, &flags);
    script.wait_pids(1).await;
    assert_eq!(first.count(RUNNING).await, 1, "the work runs");
    let task_id = task_id_of(&rest, &instance).await;

    first.signal("TERM");
    let code = first.wait_exit(Duration::from_secs(10));
    script.wait_none_running("the command has ended").await;
    if ignores_sigterm {
        assert_eq!(code, Some(1), "the grace had to abandon the command");
    } else {
        assert_eq!(code, Some(0), "everything ended within the grace");
        let log = first.stderr();
        assert_eq!(
            lines_with(&log, "not delivered before shutdown"),
            1,
            "one WARN: the follow-up stays owed: {log}"
        );
        let lease = lease_of(&rest, &instance)
            .await
            .expect("a lease handed back");
        assert_eq!(
            owed_due(&lease, &topic, &task_id),
            0,
            "the follow-up is handed back, due at once, not at the end of its 60 s lease: {lease}"
        );
        assert!(
            owed_due(&marker_of(&rest, &instance).await, &topic, &task_id) > unix_ms(),
            "the marker's first lease has not run out: the next start finds the hand-back by its lease"
        );
    }
    assert_eq!(waits_for(&rest, &instance, &message).await.len(), 1);

    let mut next = WorkerProcess::spawn("next", &engine.url, &flags);
    rest.wait_instances_completed(std::slice::from_ref(&instance), WAIT)
        .await;
    assert_eq!(script.lines("runs"), vec![task_id.clone(), task_id.clone()]);
    let variables = history_variables(&rest, &instance).await;
    assert_variable(&variables, "run", "Integer", json!(2));
    assert_one_message(&rest, &instance).await;
    assert_eq!(next.terminate(SHUTDOWN_LIMIT), Some(0));
}

/// A shell script's work is usually another program it starts: at shutdown that program ends with
/// the script instead of outliving the worker (and holding the script's output pipes open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_the_programs_a_shell_command_started_end_with_it() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("work_sh_children").await;
    let script = Script::write(&format!(
        "#!/bin/sh\ncat >/dev/null\necho $$ >>\"$1/pids\"\n\
             {} -c 'import time; time.sleep(60)' \"$1\" &\n\
             echo $! >>\"$1/pids\"\nwait\necho '{{}}'\n",
        python()
    ));
    let instance = start_instance(&rest, &key, "work-sh-1", json!({})).await;
    let mut flags = worker_flags(&topic, &message, &script);
    flags.extend(["--shutdown-grace", "3s", "--reconcile-interval", "0"]);
    let mut worker = WorkerProcess::spawn("sh", &engine.url, &flags);
    let pids = script.wait_pids(2).await;
    worker.signal("TERM");
    let code = worker.wait_exit(Duration::from_secs(10));
    wait_gone(&pids[..1], "the shell script has ended").await;
    wait_gone(
        &pids[1..],
        "the program the shell script started has ended too",
    )
    .await;
    assert_eq!(
        code,
        Some(0),
        "the script and its program ended within the grace"
    );
    delete_instance(&rest, &instance).await;
}
