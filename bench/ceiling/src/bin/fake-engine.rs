//! A fake Camunda engine with canned replies, to measure camunda-worker's own cost without a JVM:
//! every fetchAndLock is answered at once with as many canned tasks as asked for, complete and
//! message get 204, the reconciler's subscription query gets an empty list. GET /stats returns the
//! counters as JSON.
//!
//! fake-engine --port PORT [--batch-cap 1000]
//!
//! Single-threaded on purpose: it leaves the other core to the worker under test. Stops on
//! SIGTERM/SIGINT.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    fetches: AtomicU64,
    tasks_handed_out: AtomicU64,
    completes: AtomicU64,
    messages: AtomicU64,
    other: AtomicU64,
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if status != StatusCode::NO_CONTENT {
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            "application/json".parse().expect("header"),
        );
    }
    response
}

fn canned_tasks(first: u64, count: u64, worker_id: &str) -> String {
    let mut out = String::with_capacity(count as usize * 520 + 2);
    out.push('[');
    for n in first..first + count {
        if n > first {
            out.push(',');
        }
        out.push_str(&format!(
            concat!(
                r#"{{"activityId":"send_message_task","activityInstanceId":"send_message_task:{n}","#,
                r#""errorMessage":null,"errorDetails":null,"executionId":"e{n}","id":"task-{n}","#,
                r#""lockExpirationTime":"2030-01-01T00:00:00.000+0000","createTime":"2030-01-01T00:00:00.000+0000","#,
                r#""processDefinitionId":"message_correlation:1:1","processDefinitionKey":"message_correlation","#,
                r#""processDefinitionVersionTag":null,"processInstanceId":"pi-{n}","retries":null,"suspended":false,"#,
                r#""workerId":"{w}","topicName":"messageSending","tenantId":null,"variables":{{}},"priority":0,"#,
                r#""businessKey":"bk-{n}","extensionProperties":{{}}}}"#
            ),
            n = n,
            w = worker_id
        ));
    }
    out.push(']');
    out
}

async fn serve(
    request: Request<Incoming>,
    counters: Arc<Counters>,
    batch_cap: u64,
) -> Result<Response<Full<Bytes>>, Infallible> {
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, "{}")),
    };
    let rest = path.strip_prefix("/engine-rest").unwrap_or(&path);
    let response = match (method, rest) {
        (Method::POST, "/external-task/fetchAndLock") => {
            counters.fetches.fetch_add(1, Ordering::Relaxed);
            let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let wanted = parsed["maxTasks"].as_u64().unwrap_or(1).min(batch_cap);
            let worker = parsed["workerId"].as_str().unwrap_or("worker").to_owned();
            let first = counters
                .tasks_handed_out
                .fetch_add(wanted, Ordering::Relaxed);
            reply(StatusCode::OK, canned_tasks(first, wanted, &worker))
        }
        (Method::POST, "/message") => {
            counters.messages.fetch_add(1, Ordering::Relaxed);
            reply(StatusCode::NO_CONTENT, Bytes::new())
        }
        (Method::POST, p) if p.starts_with("/external-task/") && p.ends_with("/complete") => {
            counters.completes.fetch_add(1, Ordering::Relaxed);
            reply(StatusCode::NO_CONTENT, Bytes::new())
        }
        (Method::POST, p) if p.starts_with("/external-task/") => {
            counters.other.fetch_add(1, Ordering::Relaxed);
            reply(StatusCode::NO_CONTENT, Bytes::new())
        }
        (Method::GET, "/stats") | (Method::GET, "/stats/") => {
            let c = &counters;
            let text = serde_json::json!({
                "requests": c.requests.load(Ordering::Relaxed),
                "fetches": c.fetches.load(Ordering::Relaxed),
                "tasks_handed_out": c.tasks_handed_out.load(Ordering::Relaxed),
                "completes": c.completes.load(Ordering::Relaxed),
                "messages": c.messages.load(Ordering::Relaxed),
                "other": c.other.load(Ordering::Relaxed),
            })
            .to_string();
            reply(StatusCode::OK, text)
        }
        (Method::GET, "/engine") => reply(StatusCode::OK, r#"[{"name":"default"}]"#),
        (Method::GET, "/event-subscription") => {
            counters.other.fetch_add(1, Ordering::Relaxed);
            reply(StatusCode::OK, "[]")
        }
        (Method::GET, p) if p.starts_with("/history/process-instance/") => {
            counters.other.fetch_add(1, Ordering::Relaxed);
            reply(StatusCode::OK, r#"{"state":"ACTIVE"}"#)
        }
        (Method::GET, p) if p.ends_with("/count") => {
            counters.other.fetch_add(1, Ordering::Relaxed);
            reply(StatusCode::OK, r#"{"count":0}"#)
        }
        _ => {
            counters.other.fetch_add(1, Ordering::Relaxed);
            reply(
                StatusCode::NOT_FOUND,
                r#"{"type":"RestException","message":"not served by the fake engine","code":null}"#,
            )
        }
    };
    Ok(response)
}

fn main() {
    let mut port: u16 = 0;
    let mut batch_cap: u64 = 1000;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        match flag.as_str() {
            "--port" => port = value.parse().unwrap_or(0),
            "--batch-cap" => batch_cap = value.parse().unwrap_or(1000).max(1),
            other => {
                eprintln!("fake-engine: unknown argument `{other}`");
                std::process::exit(2);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let bound = listener.local_addr().expect("address");
        eprintln!("fake-engine: listening on http://{bound}/engine-rest");
        let counters = Arc::new(Counters::default());
        let accept = Rc::new(listener);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        loop {
            let (stream, _) = tokio::select! {
                accepted = accept.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(_) => continue,
                },
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            };
            let _ = stream.set_nodelay(true);
            let counters = Arc::clone(&counters);
            tokio::task::spawn_local(async move {
                let service = hyper::service::service_fn(move |request| {
                    serve(request, Arc::clone(&counters), batch_cap)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
