//! The OAuth token endpoint as an identity provider the worker does not control may answer:
//! token replies are never repeated in errors or logs, `expires_in` is read leniently (a numeric
//! string) and capped (a huge value stopped polling), redirects are not followed, and a reply is
//! read against a bound.

use std::path::Path;

use camunda_worker::engine::EngineClient;
use serde_json::json;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::secrets::{assert_hidden, engine_requiring, fetch, secret_file, SECRET, WAIT};
use crate::support::mock::MockEngine;
use crate::support::{config_for, eventually, SHUTDOWN_LIMIT};
/// An OAuth client of `server`'s `/oauth/token`, its secret in a file.
fn oauth_client(server: &MockServer, secret: &Path) -> EngineClient {
    let url = format!("{}/engine-rest", server.uri());
    let token_url = format!("{}/oauth/token", server.uri());
    let config = config_for(
        &url,
        &[
            "--oauth-token-url",
            &token_url,
            "--oauth-client-id",
            "worker",
            "--oauth-client-secret-file",
            secret.to_str().unwrap(),
        ],
    );
    EngineClient::new(config.engine).unwrap()
}

async fn token_endpoint_answers(server: &MockServer, reply: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("client_secret=from-file"))
        .respond_with(reply)
        .mount(server)
        .await;
}

fn token_calls(requests: &[wiremock::Request]) -> usize {
    requests
        .iter()
        .filter(|r| r.url.path() == "/oauth/token")
        .count()
}

/// `"expires_in": "300"` (a string, as some identity providers send it) is a lifetime: the token
/// is used and cached. The client secret comes from its file, without the trailing newline.
#[tokio::test]
async fn a_token_whose_expires_in_is_a_string_is_used_and_cached() {
    let server = engine_requiring("Bearer AT-string").await;
    token_endpoint_answers(
        &server,
        ResponseTemplate::new(200)
            .set_body_json(json!({"access_token": "AT-string", "expires_in": "300"})),
    )
    .await;
    let secret = secret_file("from-file\n");
    let client = oauth_client(&server, secret.path());
    fetch(&client).await.expect("the token is accepted");
    fetch(&client).await.expect("and cached");
    assert_eq!(token_calls(&server.received_requests().await.unwrap()), 1);
}

/// An error reply shows its status and RFC 6749 error fields only; a success reply without a
/// token shows nothing of itself: tokens in either never reach an error (and so a log line).
#[tokio::test]
async fn token_replies_are_never_repeated_in_errors() {
    let server = MockServer::start().await;
    let leaky = json!({
        "error": "invalid_client",
        "error_description": "client authentication failed",
        "access_token": "AT-LEAK",
        "refresh_token": "RT-LEAK"
    });
    token_endpoint_answers(&server, ResponseTemplate::new(401).set_body_json(leaky)).await;
    let secret = secret_file("from-file");
    let error = fetch(&oauth_client(&server, secret.path()))
        .await
        .expect_err("no token");
    let text = error.to_string();
    assert!(text.contains("401"), "{text}");
    assert!(
        text.contains("invalid_client") && text.contains("client authentication failed"),
        "{text}"
    );
    assert!(!text.contains("LEAK"), "{text}");

    let server = MockServer::start().await;
    token_endpoint_answers(
        &server,
        ResponseTemplate::new(200)
            .set_body_json(json!({"token": "AT-LEAK", "refresh_token": "RT-LEAK"})),
    )
    .await;
    let error = fetch(&oauth_client(&server, secret.path()))
        .await
        .expect_err("no access_token");
    let text = error.to_string();
    assert!(text.contains("access_token"), "{text}");
    assert!(!text.contains("LEAK"), "{text}");
}

/// A redirect from the token endpoint is not followed — the client secret would go with it — and
/// the error names where it pointed; a reply over the bound is a failed call naming the bound.
#[tokio::test]
async fn the_token_endpoint_s_redirects_are_not_followed_and_its_reply_is_bounded() {
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": "AT"})))
        .mount(&elsewhere)
        .await;
    let server = MockServer::start().await;
    let location = format!("{}/oauth/token", elsewhere.uri());
    token_endpoint_answers(
        &server,
        ResponseTemplate::new(307).insert_header("Location", location.as_str()),
    )
    .await;
    let secret = secret_file("from-file");
    let error = fetch(&oauth_client(&server, secret.path()))
        .await
        .expect_err("not followed");
    let text = error.to_string();
    assert!(text.contains("307") && text.contains(&location), "{text}");
    assert!(
        elsewhere.received_requests().await.unwrap().is_empty(),
        "the second server saw nothing"
    );

    let server = MockServer::start().await;
    let huge = format!(r#"{{"access_token": "{}"}}"#, "x".repeat(200 * 1024));
    token_endpoint_answers(&server, ResponseTemplate::new(200).set_body_string(huge)).await;
    let error = fetch(&oauth_client(&server, secret.path()))
        .await
        .expect_err("too big");
    let text = error.to_string();
    assert!(
        text.contains("/oauth/token") && text.contains("65536"),
        "{text}"
    );
}

/// A huge `expires_in` panicked the poll loop (a `Duration` overflow) and polling stopped: now it
/// is capped at a day, and the worker goes on polling with its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_expires_in_is_capped_and_the_worker_goes_on_polling() {
    let engine = MockEngine::start(vec![]).await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": "AT-huge", "expires_in": 18_446_744_073_709_551_615_u64}),
        ))
        .mount(&engine.server)
        .await;
    let secret = secret_file("from-file\n");
    let token_url = format!("{}/oauth/token", engine.server.uri());
    let mut worker = engine.worker(&[
        "--oauth-token-url",
        &token_url,
        "--oauth-client-id",
        "worker",
        "--oauth-client-secret-file",
        secret.path().to_str().unwrap(),
    ]);
    eventually(WAIT, "five fetches with the token", || async {
        (engine.requests_to("fetchAndLock").len() >= 5).then_some(())
    })
    .await;
    worker.assert_running("after a huge expires_in");
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    let log = worker.stderr();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("AT-huge"), "{log}");
    let requests = engine.server.received_requests().await.unwrap();
    assert_eq!(token_calls(&requests), 1, "the token was cached");
}

/// A token endpoint that refuses the client with tokens in its error body: the worker's log has
/// one ERROR with the status and the error fields, and none of the tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_token_endpoint_is_logged_without_its_reply() {
    let engine = MockEngine::start(vec![]).await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_client",
            "error_description": "unknown client",
            "access_token": "AT-LEAK",
            "refresh_token": "RT-LEAK"
        })))
        .mount(&engine.server)
        .await;
    let token_url = format!("{}/oauth/token", engine.server.uri());
    let mut worker = engine.worker(&[
        "--oauth-token-url",
        &token_url,
        "--oauth-client-id",
        "worker",
        "--oauth-client-secret",
        SECRET,
    ]);
    eventually(WAIT, "the refusal in the log", || async {
        worker.stderr().contains("invalid_client").then_some(())
    })
    .await;
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    let log = worker.stderr();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert_eq!(errors.len(), 1, "one ERROR: {log}");
    assert!(
        errors[0].contains("400") && errors[0].contains("unknown client"),
        "{}",
        errors[0]
    );
    assert!(!log.contains("LEAK"), "{log}");
    assert_hidden("the log", &log);
    assert!(
        engine.requests_to("fetchAndLock").is_empty(),
        "no engine call without a token"
    );
}
