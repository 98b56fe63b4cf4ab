//! The worker binary against a hostile engine on loopback: replies without end or larger than
//! their bound, redirects to a second host, and a private CA trusted through the system's
//! certificate store. Endless and oversized bodies come from a tiny raw HTTP server (wiremock
//! cannot stream); redirects from the mock engine.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wiremock::ResponseTemplate;

use crate::support::mock::{task, MockEngine};
use crate::support::{eventually, lines_with, WorkerProcess, SHUTDOWN_LIMIT};

/// The worker's bound on a fetchAndLock reply (`engine/reply.rs`), as its ERROR names it.
const FETCH_BOUND: &str = "16 MiB";

/// How the raw engine answers one request.
#[derive(Clone, Copy)]
enum Answer {
    /// `200 []`, after a short pause (standing in for a long poll).
    Empty,
    /// `200`, chunked, and chunks for as long as the client reads.
    Endless,
    /// `200`, chunked, one byte every 200 ms for as long as the client reads.
    Trickle,
    /// `200` announcing this `Content-Length`, then a few bytes, then silence until the client
    /// goes.
    Declared(u64),
}

/// A request as the raw engine saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    body: Value,
}

/// An engine that speaks just enough HTTP/1.1 (one request per connection) to misbehave: fetch
/// gets `fetch`'s answer, every other request `[]`. Records each request and counts the body bytes
/// it wrote.
struct RawEngine {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    written: Arc<AtomicU64>,
}

impl RawEngine {
    async fn start(fetch: Answer) -> RawEngine {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/engine-rest", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let written = Arc::new(AtomicU64::new(0));
        let (log, count) = (Arc::clone(&seen), Arc::clone(&written));
        tokio::spawn(async move {
            while let Ok((connection, _)) = listener.accept().await {
                let (log, count) = (Arc::clone(&log), Arc::clone(&count));
                tokio::spawn(serve(connection, fetch, log, count));
            }
        });
        RawEngine { url, seen, written }
    }

    /// The `maxTasks` of every fetch the worker sent while it ran (not the shutdown's cancel,
    /// which asks for none).
    fn max_tasks(&self) -> Vec<u64> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.ends_with("/fetchAndLock"))
            .filter_map(|s| s.body["maxTasks"].as_u64())
            .filter(|&n| n > 0)
            .collect()
    }
}

/// Reads one request (head and `Content-Length` body) and answers it.
async fn serve(
    mut connection: TcpStream,
    fetch: Answer,
    seen: Arc<Mutex<Vec<Seen>>>,
    written: Arc<AtomicU64>,
) {
    let mut request = Vec::new();
    let mut buffer = [0_u8; 8192];
    let head_end = loop {
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match connection.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while request.len() < head_end + length {
        match connection.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let body = serde_json::from_slice(&request[head_end..head_end + length]).unwrap_or(Value::Null);
    let answer = if path.ends_with("/fetchAndLock") {
        fetch
    } else {
        Answer::Empty
    };
    seen.lock().unwrap().push(Seen { path, body });
    match answer {
        Answer::Empty => {
            // Kept: the hostile server's own pace, standing in for a long poll.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]";
            let _ = connection.write_all(reply.as_bytes()).await;
        }
        Answer::Endless => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
            if connection.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let item = br#"{"id":"t","topicName":"messageSending","variables":{}},"#;
            let mut chunk = format!("{:x}\r\n", item.len() * 1024).into_bytes();
            for _ in 0..1024 {
                chunk.extend_from_slice(item);
            }
            chunk.extend_from_slice(b"\r\n");
            let _ = connection.write_all(b"1\r\n[\r\n").await;
            while connection.write_all(&chunk).await.is_ok() {
                written.fetch_add((item.len() * 1024) as u64, Ordering::Relaxed);
            }
        }
        Answer::Trickle => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n1\r\n[\r\n";
            let mut sent = connection.write_all(head.as_bytes()).await;
            while sent.is_ok() {
                // Kept: the hostile server's own pace: one byte of a never-ending body each 200 ms.
                tokio::time::sleep(Duration::from_millis(200)).await;
                sent = connection.write_all(b"1\r\n \r\n").await;
            }
        }
        Answer::Declared(length) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n[{{\"id\":"
            );
            if connection.write_all(head.as_bytes()).await.is_ok() {
                // Silence until the client goes: it must not wait for the rest.
                let _ = connection.read(&mut buffer).await;
            }
        }
    }
}

/// The resident memory of a process, in KiB (`VmRSS` of `/proc/<pid>/status`).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The flags that make a worker fetch 8 tasks at most and back off for a second at most, so a few
/// failed fetches come quickly; a short long poll, so that the shutdown's sweep of what a fetch cut
/// short may have locked ends soon.
const QUICK: &[&str] = &[
    "--max-tasks",
    "8",
    "--max-backoff",
    "1s",
    "--long-poll",
    "2s",
    "--reconcile-interval",
    "0",
];

/// The ERROR lines of a log that contain every one of `needles`.
fn errors_with(log: &str, needles: &[&str]) -> usize {
    log.lines()
        .filter(|line| line.contains("ERROR") && needles.iter().all(|n| line.contains(n)))
        .count()
}

// Multi-threaded: the raw engine must go on answering while the test blocks on the worker's exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_fetch_reply_is_cut_at_its_bound_and_the_next_fetches_ask_for_fewer_tasks() {
    // Today's main read it whole: 4.4 GiB in 15 s. The bound: 16 MiB of reply, plus the
    // worker's own few MiB, with room for a loaded machine's allocator.
    const RSS_LIMIT_KIB: u64 = 200 * 1024;
    let engine = RawEngine::start(Answer::Endless).await;
    let mut worker = WorkerProcess::spawn("worker", &engine.url, QUICK);
    let pid = worker.child.id();
    let mut peak = 0;
    eventually(
        Duration::from_secs(90),
        "five fetches answered without end",
        || {
            let rss = rss_kib(pid).unwrap_or(0);
            peak = peak.max(rss);
            let count = engine.max_tasks().len();
            async move {
                assert!(
                    rss < RSS_LIMIT_KIB,
                    "the worker holds {rss} KiB while the reply streams"
                );
                (count >= 5).then_some(())
            }
        },
    )
    .await;
    worker.assert_running("while fetch replies stream without end");
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));

    let streamed = engine.written.load(Ordering::Relaxed);
    assert!(
        streamed > (4 * 16) << 20,
        "the stub streamed {streamed} bytes only"
    );
    let asked = engine.max_tasks();
    assert_eq!(
        asked[..4],
        [8, 4, 2, 1],
        "maxTasks fetch after fetch: {asked:?}"
    );
    assert!(asked[4..].iter().all(|&n| n == 1), "{asked:?}");
    let log = worker.stderr();
    assert!(
        errors_with(&log, &["POST /external-task/fetchAndLock", FETCH_BOUND]) >= 1,
        "{log}"
    );
    assert_eq!(lines_with(&log, "fetching at most"), 1, "said once: {log}");
    eprintln!("peak RSS {peak} KiB while {streamed} bytes streamed");
}

// Multi-threaded: the raw engine must go on answering while the test blocks on the worker's exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_reply_announcing_more_than_its_bound_is_refused_unread() {
    let engine = RawEngine::start(Answer::Declared(1 << 30)).await;
    let mut worker = WorkerProcess::spawn("worker", &engine.url, QUICK);
    eventually(Duration::from_secs(60), "a second fetch", || {
        let count = engine.max_tasks().len();
        async move { (count >= 2).then_some(()) }
    })
    .await;
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    let asked = engine.max_tasks();
    assert_eq!(asked[..2], [8, 4], "{asked:?}");
    let log = worker.stderr();
    assert!(
        errors_with(
            &log,
            &[
                "POST /external-task/fetchAndLock",
                FETCH_BOUND,
                "Content-Length 1073741824"
            ]
        ) >= 1,
        "{log}"
    );
}

// Multi-threaded: the raw engine must go on answering while the test blocks on the worker's exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_reply_that_trickles_without_end_is_cut_at_the_fetch_deadline() {
    // The deadline is the fetch's own timeout (its long poll, 2 s here, plus a 1 s margin): the
    // body's bytes do not restart it.
    let engine = RawEngine::start(Answer::Trickle).await;
    let mut worker = WorkerProcess::spawn("worker", &engine.url, QUICK);
    eventually(Duration::from_secs(90), "a third fetch", || {
        let count = engine.max_tasks().len();
        async move { (count >= 3).then_some(()) }
    })
    .await;
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    // Slow is not large: the number of tasks asked for stays.
    let asked = engine.max_tasks();
    assert!(asked.iter().all(|&n| n == 8), "{asked:?}");
    let log = worker.stderr();
    assert!(log.contains("timed out"), "{log}");
    assert_eq!(lines_with(&log, "fetching at most"), 0, "{log}");
}

/// A second host on loopback that counts the connections it is offered.
async fn second_host() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((_connection, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (format!("http://{address}/engine-rest"), connections)
}

fn redirect_to(location: &str) -> ResponseTemplate {
    ResponseTemplate::new(307).insert_header("location", location)
}

#[tokio::test]
async fn a_redirected_fetch_is_a_failed_call_and_the_second_host_sees_nothing() {
    let (elsewhere, connections) = second_host().await;
    let location = format!("{elsewhere}/external-task/fetchAndLock");
    let engine = MockEngine::start(vec![]).await;
    engine.fetch_first(u64::MAX, redirect_to(&location)).await;
    let mut worker = engine.worker(&["--max-backoff", "1s"]);
    eventually(Duration::from_secs(60), "the fetch tried again", || {
        let count = engine.requests_to("/fetchAndLock").len();
        async move { (count >= 3).then_some(()) }
    })
    .await;
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    let log = worker.stderr();
    assert_eq!(
        errors_with(
            &log,
            &["POST /external-task/fetchAndLock answered 307", &location]
        ),
        1,
        "one ERROR naming Location: {log}"
    );
}

#[tokio::test]
async fn a_redirected_message_is_a_failed_call_and_the_second_host_sees_nothing() {
    let (elsewhere, connections) = second_host().await;
    let location = format!("{elsewhere}/message");
    let engine = MockEngine::start(vec![json!([task("t1", Some("k1"))])]).await;
    engine
        .on("external-task/t1/complete", ResponseTemplate::new(204))
        .await;
    engine.on("message", redirect_to(&location)).await;
    let mut worker = engine.quick_worker(&["--max-backoff", "1s"]);
    eventually(Duration::from_secs(60), "the message tried again", || {
        let count = engine.requests_to("/message").len();
        async move { (count >= 2).then_some(()) }
    })
    .await;
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    let log = worker.stderr();
    assert!(
        errors_with(&log, &["POST /message answered 307", &location]) >= 1,
        "an ERROR naming Location: {log}"
    );
}
