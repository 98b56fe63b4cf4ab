//! The proxy against a tiny local upstream that records what reaches it.

use axum::extract::State;
use axum::response::IntoResponse;
use serde_json::json;

use super::*;
use crate::support::eventually;

/// Bound of every wait that should end at once.
const LIMIT: Duration = Duration::from_secs(30);

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
}

/// The upstream: records each request when it arrives, then answers `/slow` after 3 s, `/json`
/// with what it received, anything else 204.
struct Upstream {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    async fn start() -> Upstream {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&seen));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Upstream { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn answer(
    State(seen): State<Arc<Mutex<Vec<Seen>>>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path_and_query: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    match parts.uri.path() {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "slow and intact".into_response()
        }
        "/json" => {
            let header = |name| {
                parts
                    .headers
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            };
            let echo = json!({
                "authorization": header(header::AUTHORIZATION),
                "contentType": header(header::CONTENT_TYPE),
                "query": parts.uri.query(),
                "body": serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
            });
            (
                [(header::CONTENT_TYPE, "application/json")],
                echo.to_string(),
            )
                .into_response()
        }
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

/// A client with reqwest's default keep-alive pool, deaf to proxy variables.
fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Sends, bounded by [`LIMIT`].
async fn send(request: reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
    tokio::time::timeout(LIMIT, request.send())
        .await
        .expect("the request ends within the limit")
}

/// An error and its causes, outermost first.
fn causes(error: &reqwest::Error) -> Vec<&(dyn std::error::Error + 'static)> {
    let mut causes: Vec<&(dyn std::error::Error + 'static)> = vec![error];
    let mut cause: &(dyn std::error::Error + 'static) = error;
    while let Some(source) = cause.source() {
        causes.push(source);
        cause = source;
    }
    causes
}

fn is_incomplete_message(error: &reqwest::Error) -> bool {
    causes(error).iter().any(|cause| {
        cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
    })
}

fn io_kind(error: &reqwest::Error) -> Option<std::io::ErrorKind> {
    causes(error)
        .iter()
        .find_map(|cause| cause.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind)
}

/// Prints what a client sees, for whoever classifies these errors (`--nocapture`).
fn show(fault: &str, error: &reqwest::Error) {
    let causes = causes(error);
    eprintln!(
        "{fault}: reqwest error: {error} | innermost: {} | chain: {:?}",
        causes.last().unwrap(),
        causes.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
}

async fn proxy_with(rules: Vec<Rule>) -> (Upstream, FaultProxy) {
    let upstream = Upstream::start().await;
    let proxy = FaultProxy::start(&upstream.url).await;
    for rule in rules {
        proxy.add_rule(rule);
    }
    (upstream, proxy)
}

#[tokio::test]
async fn requests_pass_through_unchanged_on_one_keep_alive_connection() {
    let (upstream, proxy) = proxy_with(vec![]).await;
    let http = client();

    let reply = send(
        http.post(format!("{}/json?a=1&b=two", proxy.url()))
            .basic_auth("demo", Some("demo"))
            .json(&json!({"workerId": "w", "maxTasks": 2})),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()[header::CONTENT_TYPE], "application/json");
    let echo: Value = reply.json().await.unwrap();
    assert_eq!(
        echo,
        json!({
            "authorization": "Basic ZGVtbzpkZW1v",
            "contentType": "application/json",
            "query": "a=1&b=two",
            "body": {"workerId": "w", "maxTasks": 2},
        })
    );

    let reply = send(
        http.post(format!(
            "{}/engine-rest/external-task/t1/complete",
            proxy.url()
        ))
        .json(&json!({"workerId": "w"})),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 204);
    assert_eq!(reply.bytes().await.unwrap().len(), 0);

    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path_and_query, "/json?a=1&b=two");
    assert_eq!(
        seen[1].path_and_query,
        "/engine-rest/external-task/t1/complete"
    );
    assert_eq!(&seen[1].body[..], br#"{"workerId":"w"}"#);
    assert!(!seen[1].headers.contains_key(header::CONNECTION));
    assert_eq!(proxy.connections(), 1, "both requests on one connection");
    assert_eq!(proxy.forwarded(), 2);
    assert!(proxy.applied().is_empty());
    assert_eq!(proxy.upstream_errors(), 0);
}

#[tokio::test]
async fn reply_lost_504_answers_504_after_the_upstream_processed_the_request() {
    let (upstream, proxy) = proxy_with(vec![
        Rule::on("POST", r"/complete$").then(Fault::ReplyLost504)
    ])
    .await;

    let reply = send(
        client()
            .post(format!(
                "{}/engine-rest/external-task/t1/complete",
                proxy.url()
            ))
            .json(&json!({"workerId": "w"})),
    )
    .await
    .unwrap();

    assert_eq!(reply.status(), 504);
    assert!(reply.text().await.unwrap().contains("504"));
    assert_eq!(upstream.count(), 1, "the engine processed the request");
    let applied = proxy.applied();
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].kind, FaultKind::ReplyLost504);
    assert_eq!(applied[0].method, "POST");
    assert_eq!(applied[0].path, "/engine-rest/external-task/t1/complete");
    assert_eq!(applied[0].body, json!({"workerId": "w"}));
}

#[tokio::test]
async fn reply_lost_reset_resets_the_connection_after_the_upstream_processed_the_request() {
    let (upstream, proxy) = proxy_with(vec![
        Rule::any_method("/complete$").then(Fault::ReplyLostReset)
    ])
    .await;

    let error = send(client().post(format!("{}/t1/complete", proxy.url())))
        .await
        .unwrap_err();

    show("ReplyLostReset", &error);
    assert!(error.is_request(), "{error:?}");
    assert_eq!(io_kind(&error), Some(std::io::ErrorKind::ConnectionReset));
    assert_eq!(upstream.count(), 1, "the engine processed the request");
    assert_eq!(proxy.applied_count(FaultKind::ReplyLostReset), 1);
}

#[tokio::test]
async fn reply_lost_hang_lets_the_client_time_out_after_the_upstream_processed_the_request() {
    let (upstream, proxy) = proxy_with(vec![
        Rule::on("POST", "/complete$").then(Fault::ReplyLostHang)
    ])
    .await;
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();

    let error = send(impatient.post(format!("{}/t1/complete", proxy.url())))
        .await
        .unwrap_err();

    show("ReplyLostHang", &error);
    assert!(error.is_timeout(), "{error:?}");
    eventually(LIMIT, "the upstream counted the request", || async {
        (upstream.count() == 1).then_some(())
    })
    .await;
    eventually(LIMIT, "the hang is recorded", || async {
        (proxy.applied_count(FaultKind::ReplyLostHang) == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn delay_answers_no_sooner_than_the_delay() {
    let pause = Duration::from_millis(400);
    let (upstream, proxy) = proxy_with(vec![
        Rule::on("POST", "/complete$").then(Fault::Delay(pause))
    ])
    .await;

    let started = Instant::now();
    let reply = send(client().post(format!("{}/t1/complete", proxy.url())))
        .await
        .unwrap();

    assert!(started.elapsed() >= pause, "{:?}", started.elapsed());
    assert_eq!(reply.status(), 204);
    assert_eq!(upstream.count(), 1);
    assert_eq!(proxy.applied_count(FaultKind::Delay(pause)), 1);
}

#[tokio::test]
async fn close_without_forwarding_and_a_status_never_reach_the_upstream() {
    let (upstream, proxy) = proxy_with(vec![
        Rule::on("POST", "^/closed$").then(Fault::CloseWithoutForwarding),
        Rule::on("POST", "^/refused$").then(Fault::Status(502)),
    ])
    .await;

    let error = send(client().post(format!("{}/closed", proxy.url())).body("{}"))
        .await
        .unwrap_err();
    show("CloseWithoutForwarding", &error);
    assert!(error.is_request(), "{error:?}");
    assert!(is_incomplete_message(&error), "{error:?}");

    let http = client();
    let reply = send(http.post(format!("{}/refused", proxy.url())))
        .await
        .unwrap();
    assert_eq!(reply.status(), 502);
    assert_eq!(reply.text().await.unwrap(), "fault proxy: injected 502");

    assert_eq!(upstream.count(), 0, "nothing reached the upstream");
    assert_eq!(proxy.forwarded(), 0);
    assert_eq!(proxy.applied_count(FaultKind::CloseWithoutForwarding), 1);
    assert_eq!(proxy.applied_count(FaultKind::Status(502)), 1);

    // A status keeps the connection alive.
    let reply = send(http.post(format!("{}/passes", proxy.url())))
        .await
        .unwrap();
    assert_eq!(reply.status(), 204);
    assert_eq!(upstream.count(), 1);
    assert_eq!(proxy.connections(), 2);
}

#[tokio::test]
async fn a_request_on_a_connection_idle_past_the_limit_finds_it_closed() {
    let (upstream, proxy) = proxy_with(vec![]).await;
    proxy.close_idle_after(Some(Duration::from_secs(1)));
    let http = client();
    let complete = format!("{}/engine-rest/external-task/t1/complete", proxy.url());

    let reply = send(http.post(&complete)).await.unwrap();
    assert_eq!(reply.status(), 204);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let error = send(http.post(&complete).json(&json!({"n": 2})))
        .await
        .unwrap_err();

    show("StaleClose", &error);
    assert!(is_incomplete_message(&error), "{error:?}");
    assert_eq!(upstream.count(), 1, "only the first request was forwarded");
    let applied = proxy.applied();
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].kind, FaultKind::StaleClose);
    assert_eq!(applied[0].body, json!({"n": 2}));

    // The next request opens a fresh connection and passes.
    let reply = send(http.post(&complete)).await.unwrap();
    assert_eq!(reply.status(), 204);
    assert_eq!(upstream.count(), 2);
    assert_eq!(proxy.connections(), 2);
}

#[tokio::test]
async fn a_long_held_upstream_reply_passes_through_intact() {
    let (upstream, proxy) = proxy_with(vec![]).await;

    let started = Instant::now();
    let reply = send(client().get(format!("{}/slow", proxy.url())))
        .await
        .unwrap();

    assert_eq!(reply.status(), 200);
    assert_eq!(reply.text().await.unwrap(), "slow and intact");
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn every_three_times_two_hits_the_third_and_sixth_match_only() {
    let (upstream, proxy) = proxy_with(vec![Rule::on("POST", r"/complete$")
        .every(3)
        .times(2)
        .then(Fault::Status(503))])
    .await;
    let http = client();

    let mut statuses = Vec::new();
    for i in 1..=9 {
        // A GET on the same path is no match and does not count.
        let reply = send(http.get(format!("{}/t{i}/complete", proxy.url())))
            .await
            .unwrap();
        assert_eq!(reply.status(), 204);
        let reply = send(http.post(format!("{}/t{i}/complete", proxy.url())))
            .await
            .unwrap();
        statuses.push(reply.status().as_u16());
    }

    assert_eq!(statuses, [204, 204, 503, 204, 204, 503, 204, 204, 204]);
    let paths: Vec<String> = proxy.applied().into_iter().map(|a| a.path).collect();
    assert_eq!(paths, ["/t3/complete", "/t6/complete"]);
    assert_eq!(upstream.count(), 16);
}

#[tokio::test]
async fn rules_apply_in_insertion_order_after_their_skipped_matches() {
    let (upstream, proxy) = proxy_with(vec![
        Rule::on("POST", "^/a$")
            .skip(1)
            .times(1)
            .then(Fault::Status(503)),
        Rule::any_method("^/a$").then(Fault::Status(502)),
    ])
    .await;
    let http = client();
    let status = |request: reqwest::RequestBuilder| async move {
        send(request).await.unwrap().status().as_u16()
    };
    let a = format!("{}/a", proxy.url());

    assert_eq!(
        status(http.post(&a)).await,
        502,
        "skipped by the first rule"
    );
    assert_eq!(status(http.post(&a)).await, 503, "the first rule fires");
    assert_eq!(status(http.post(&a)).await, 502, "the first rule is spent");
    assert_eq!(status(http.get(&a)).await, 502, "other method");
    proxy.clear_rules();
    assert_eq!(status(http.post(&a)).await, 204, "no rules");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn a_cut_body_gives_the_client_the_status_and_half_a_body_after_the_upstream_processed_it() {
    let (upstream, proxy) =
        proxy_with(vec![Rule::on("POST", r"/json$").then(Fault::CutBody)]).await;

    let reply = send(
        client()
            .post(format!("{}/json", proxy.url()))
            .json(&json!({"long": "x".repeat(200)})),
    )
    .await
    .expect("status and headers arrive whole");
    assert_eq!(reply.status(), 200);
    let error = reply
        .bytes()
        .await
        .expect_err("the body ends short of its length");

    show("CutBody", &error);
    assert!(error.is_body() || error.is_decode(), "{error:?}");
    assert_eq!(upstream.count(), 1, "the engine processed the request");
    assert_eq!(proxy.applied_count(FaultKind::CutBody), 1);
}

/// The faults a chaos mix drew for 400 requests to the upstream, fetchAndLock and others
/// alternating.
async fn chaos_run(seed: u64) -> (Vec<FaultKind>, usize) {
    let (upstream, proxy) = proxy_with(vec![]).await;
    let fetch = Mix {
        status_503: 0.2,
        ..Mix::CALM
    };
    let other = Mix::even(0.05, Duration::from_millis(5));
    proxy.set_chaos(Some(Chaos::new(seed, fetch, other)));
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for i in 0..400 {
        let path = if i % 2 == 0 {
            "external-task/fetchAndLock"
        } else {
            "message"
        };
        let _ = http
            .post(format!("{}/engine-rest/{path}", proxy.url()))
            .send()
            .await;
    }
    let kinds = proxy.applied().iter().map(|a| a.kind).collect();
    (kinds, upstream.count())
}

#[tokio::test]
async fn chaos_draws_each_fault_of_its_mix_per_class_and_the_same_faults_from_the_same_seed() {
    let (kinds, reached) = chaos_run(7).await;

    let count = |wanted: fn(&FaultKind) -> bool| kinds.iter().filter(|k| wanted(k)).count();
    // 200 fetches at 20 % 503 and 200 others at 5 % of each kind: every kind shows up.
    assert!(count(|k| *k == FaultKind::Status(503)) > 20, "{kinds:?}");
    assert!(count(|k| *k == FaultKind::ReplyLost504) > 0, "{kinds:?}");
    assert!(count(|k| *k == FaultKind::ReplyLostReset) > 0, "{kinds:?}");
    assert!(count(|k| *k == FaultKind::CutBody) > 0, "{kinds:?}");
    assert!(
        count(|k| *k == FaultKind::CloseWithoutForwarding) > 0,
        "{kinds:?}"
    );
    assert!(count(|k| matches!(k, FaultKind::Delay(_))) > 0, "{kinds:?}");
    let not_forwarded =
        count(|k| matches!(k, FaultKind::Status(_) | FaultKind::CloseWithoutForwarding));
    assert_eq!(
        reached,
        400 - not_forwarded,
        "every other request reached the upstream"
    );
    let (again, _) = chaos_run(7).await;
    assert_eq!(
        kinds, again,
        "the same seed draws the same faults in the same order"
    );
}
