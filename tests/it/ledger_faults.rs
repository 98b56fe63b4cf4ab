//! The ledger under faults: the worker binary against the real engine through the fault proxy,
//! where a follow-up is given up and recovered later, and where three replicas' reconcilers race
//! each other's live follow-ups; and a shutdown that a hanging name lookup cannot hold up.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::lines_with;

/// How many times process `pid` has `file` open (each a name lookup blocked reading it).
fn times_open(pid: u32, file: &Path) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.filter_map(Result::ok)
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == file))
        .count()
}

/// A name lookup that never returns, made on loopback alone: glibc's resolver reads the file that
/// `HOSTALIASES` names before it asks any DNS server about a name without dots, and this file is
/// a FIFO that the test holds open for writing and never writes to — so every `getaddrinfo` of the
/// engine's host blocks in that read, in one of the runtime's blocking threads, for as long as the
/// test lets it. No packet leaves the machine. The worker is told SIGTERM while its lookups hang:
/// it must exit within its grace, not wait for threads that will never finish.
///
/// SIGTERM comes once `hanging` lookups are blocked: 1 is the worker's first call at start;
/// 2 or more means a call gave up on its lookup (the connect timeout) and left its thread behind,
/// and the fetch that followed is waiting for a lookup of its own.
async fn sigterm_with_lookups_hanging_exits_within_the_shutdown_grace(hanging: usize) {
    const GRACE: Duration = Duration::from_secs(3);
    // The process's own exit after the grace: the runtime's last wait for blocking threads
    // (200 ms) and the exit itself, on a busy machine.
    const MARGIN: Duration = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let aliases: PathBuf = dir.path().join("host.aliases");
    let status = std::process::Command::new("mkfifo")
        .arg(&aliases)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", aliases.display());
    // Read and write: opening does not wait for a reader, and while it is open a reader's read
    // waits for data that never comes instead of ending at EOF.
    let hold = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&aliases)
        .unwrap();

    let log = tempfile::NamedTempFile::new().unwrap();
    let metrics_addr = format!("127.0.0.1:{}", crate::support::engine::free_port());
    let mut child = crate::support::binary()
        .env("HOSTALIASES", &aliases)
        .args([
            // No dots: the resolver consults HOSTALIASES for it.
            "--engine-url",
            "http://camunda-engine-lookup-hangs:8080/engine-rest",
            "--metrics-addr",
            &metrics_addr,
            "--shutdown-grace",
            "3s",
            "--reconcile-interval",
            "0",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stderr = || std::fs::read_to_string(log.path()).unwrap();

    crate::support::eventually(
        Duration::from_secs(30),
        &format!("{hanging} lookups of the engine's host hang in the worker"),
        || async { (times_open(pid, &aliases) >= hanging).then_some(()) },
    )
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the worker runs: {}",
        stderr()
    );

    let signalled = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if signalled.elapsed() > GRACE + MARGIN + Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the worker did not exit {:?} after SIGTERM; log:\n{}",
                signalled.elapsed(),
                stderr()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    // Still held: the lookups were hanging when the worker exited, not answered at the end.
    drop(hold);

    let log = stderr();
    assert!(
        took <= GRACE + MARGIN,
        "exited {took:?} after SIGTERM, past the {GRACE:?} grace; log:\n{log}"
    );
    assert!(exit.code().is_some(), "exited by itself ({exit}): {log}");
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(lines_with(&log, " ERROR "), 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_first_name_lookup_hangs_exits_within_the_shutdown_grace() {
    sigterm_with_lookups_hanging_exits_within_the_shutdown_grace(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_a_fetch_waits_behind_an_abandoned_name_lookup_exits_within_the_grace() {
    sigterm_with_lookups_hanging_exits_within_the_shutdown_grace(2).await;
}
