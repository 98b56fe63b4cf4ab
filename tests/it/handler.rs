//! A handler that fails, panics or runs long: the failure is reported with its details and
//! decreasing retries, a panic is contained, and a long run gets its lock extended (mock engine).

use serde_json::json;
use wiremock::ResponseTemplate;

use crate::support::eventually;
use crate::support::faults::{spawn_picky, WAIT};
use crate::support::mock::{task, MockEngine};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_error_is_reported_with_message_details_and_decreasing_retries() {
    let mut first = task("fresh", Some("k1"));
    first["retries"] = json!(null);
    let mut again = task("again", Some("k2"));
    again["retries"] = json!(2);
    let engine = MockEngine::start(vec![json!([first, again])]).await;
    engine
        .on(
            "external-task/(fresh|again)/failure",
            ResponseTemplate::new(204),
        )
        .await;
    let worker = spawn_picky(
        &engine,
        &[
            "--retries",
            "3",
            "--retry-timeout",
            "45s",
            "--worker-id",
            "w-1",
        ],
    );
    eventually(WAIT, "two failure reports", || async {
        (engine.requests_to("/failure").len() == 2).then_some(())
    })
    .await;
    worker.shutdown().await;
    let fresh = &engine.requests_to("/fresh/failure")[0].body;
    assert_eq!(
        fresh,
        &json!({
            "workerId": "w-1",
            "errorMessage": "inventory service down",
            "errorDetails": "GET /stock: connection refused",
            "retries": 3,
            "retryTimeout": 45000
        })
    );
    assert_eq!(
        engine.requests_to("/again/failure")[0].body["retries"],
        json!(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_contained_and_reported() {
    let engine = MockEngine::start(vec![
        json!([task("boom", Some("k1"))]),
        json!([task("other", Some("k2"))]),
    ])
    .await;
    engine
        .on(
            "external-task/(boom|other)/failure",
            ResponseTemplate::new(204),
        )
        .await;
    let worker = spawn_picky(&engine, &[]);
    eventually(
        WAIT,
        "both tasks reported (the loop survived the panic)",
        || async { (engine.requests_to("/failure").len() == 2).then_some(()) },
    )
    .await;
    worker.shutdown().await;
    let boom = &engine.requests_to("/boom/failure")[0].body;
    assert_eq!(boom["errorMessage"], json!("the handler panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_running_past_half_its_lock_gets_the_lock_extended() {
    let engine = MockEngine::start(vec![json!([task("slow", Some("k1"))])]).await;
    engine
        .on("external-task/slow/extendLock", ResponseTemplate::new(204))
        .await;
    engine
        .on("external-task/slow/complete", ResponseTemplate::new(204))
        .await;
    let worker = spawn_picky(&engine, &["--lock-duration", "1s", "--worker-id", "w-1"]);
    eventually(WAIT, "the completion", || async {
        (!engine.requests_to("/slow/complete").is_empty()).then_some(())
    })
    .await;
    worker.shutdown().await;
    let extensions = engine.requests_to("/slow/extendLock");
    // 1.7 s of work with a 1 s lock: extended at ~0.5 s, ~1.0 s and ~1.5 s.
    assert!(extensions.len() >= 2, "{} extensions", extensions.len());
    assert_eq!(
        extensions[0].body,
        json!({"workerId": "w-1", "newDuration": 1000})
    );
}
