//! The minimum poll pause (`--min-poll-interval`): empty fetch replies that come back sooner wait
//! out the rest, replies with tasks do not, and a paced loop is not called stuck.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::support::mock::{task, MockEngine, Seen};
use crate::support::{eventually, SHUTDOWN_LIMIT};

/// The fetches the mock has seen so far.
pub(crate) fn fetches(engine: &MockEngine) -> usize {
    engine.requests_to("/external-task/fetchAndLock").len()
}

/// `--long-poll 0s` against an engine that answers `[]` at once: with the default
/// `--min-poll-interval` of 1 s the worker fetches at most once a second (it made 37 fetches a
/// second before). Counted at the mock over a window measured by the test itself, against a bound
/// derived from the pause — at most one fetch per full second of the window, plus the two at its
/// ends — which a slow machine can only stay further below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_fetch_replies_that_come_back_at_once_are_paced_by_the_minimum_poll_pause() {
    let engine = MockEngine::start(Vec::new()).await;
    Mock::given(method("POST"))
        .and(path("/engine-rest/external-task/fetchAndLock"))
        .respond_with(ImmediateEmpty {
            seen: Arc::clone(&engine.seen),
        })
        .with_priority(1)
        .mount(&engine.server)
        .await;
    let mut worker = engine.worker(&["--long-poll", "0s"]);
    eventually(Duration::from_secs(30), "two fetches", || async {
        (fetches(&engine) >= 2).then_some(())
    })
    .await;
    let (started, before) = (Instant::now(), fetches(&engine));
    // Kept: an observation window: the fetches in four seconds of empty replies measure the pacing.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (window, during) = (started.elapsed(), fetches(&engine) - before);
    eprintln!("{during} fetches in {window:?}");
    worker.assert_running("while its polls are paced");
    let bound = window.as_secs() as usize + 2;
    assert!(
        during <= bound,
        "{during} fetches in {window:?}, more than one a second (bound {bound}); log:\n{}",
        worker.stderr()
    );
    assert_eq!(
        worker.terminate(SHUTDOWN_LIMIT),
        Some(0),
        "{}",
        worker.stderr()
    );
}

/// Replies with tasks are not paced: with a pause of 5 minutes, three batches of one task each
/// and the empty poll after them are all fetched within a bound far below the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_replies_with_tasks_are_not_paced() {
    let batches = (1..=3)
        .map(|i| json!([task(&format!("t{i}"), Some(&format!("k{i}")))]))
        .collect();
    let engine = MockEngine::start(batches).await;
    engine
        .on("external-task/.*/complete", ResponseTemplate::new(204))
        .await;
    let mut worker = engine.worker(&["--min-poll-interval", "5m", "--correlation-delay", "1h"]);
    eventually(Duration::from_secs(60), "four fetches", || async {
        (fetches(&engine) >= 4).then_some(())
    })
    .await;
    // Kept: a second in which no fetch may come (the pause is five minutes).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        fetches(&engine),
        4,
        "after the empty fourth fetch, the next waits for the 5 min pause"
    );
    assert_eq!(
        worker.terminate(SHUTDOWN_LIMIT),
        Some(0),
        "{}",
        worker.stderr()
    );
}

/// fetchAndLock answered `[]` at once, recorded like the mock's own responder.
struct ImmediateEmpty {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Respond for ImmediateEmpty {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.seen.lock().unwrap().push(Seen {
            method: request.method.to_string(),
            path: request.url.path().to_owned(),
            query: Vec::new(),
            body: serde_json::from_slice(&request.body).unwrap_or_default(),
            at: std::time::Instant::now(),
        });
        ResponseTemplate::new(200).set_body_json(json!([]))
    }
}

/// A loop paced by a minimum poll pause longer than its long poll is not stuck: `/healthz` stays
/// 200 past twice the long poll and its margin (2 s for `--long-poll 0s`), while the next poll
/// waits for the 5-minute pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_waiting_out_the_minimum_poll_pause_stays_healthy() {
    let engine = MockEngine::start(Vec::new()).await;
    Mock::given(method("POST"))
        .and(path("/engine-rest/external-task/fetchAndLock"))
        .respond_with(ImmediateEmpty {
            seen: Arc::clone(&engine.seen),
        })
        .with_priority(1)
        .mount(&engine.server)
        .await;
    let mut worker = engine.worker(&["--long-poll", "0s", "--min-poll-interval", "5m"]);
    eventually(Duration::from_secs(30), "the first fetch", || async {
        (fetches(&engine) >= 1).then_some(())
    })
    .await;
    let polled = Instant::now();
    // Kept: five seconds in which the second fetch must not come (it waits for the pause).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(fetches(&engine), 1, "the second fetch waits for the pause");
    assert!(
        polled.elapsed() < Duration::from_secs(300),
        "still within the pause"
    );
    assert_eq!(worker.probe("/healthz").await, 200, "{}", worker.stderr());
    assert_eq!(
        worker.terminate(SHUTDOWN_LIMIT),
        Some(0),
        "{}",
        worker.stderr()
    );
}
