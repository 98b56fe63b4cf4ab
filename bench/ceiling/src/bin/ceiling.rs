//! The ceiling: the real engine driven by a minimal, high-concurrency client doing camunda-worker's
//! job — fetchAndLock many tasks at once (several fetchers), complete every task at once, correlate
//! `sample_response` by business key after the delay. No slots, no metrics, no logging, no retries
//! except for a message that finds no waiting instance. Whatever this reaches is the most any
//! worker can get out of the engine on this machine.
//!
//! ceiling --engine-url URL [--fetchers 2] [--max-tasks 200] [--delay-ms 2000] [--limit-secs 900]
//!         [--async-response-timeout-ms 30000] [--ledger none|marker|keys|flip|instance]
//!
//! --ledger adds camunda-worker's exactly-once ledger one part at a time, so the benchmark can
//! price each part on the engine (each level includes the ones before it):
//!   none      the blind client: no marker, the message by business key (the default)
//!   marker    `complete` also sets the marker variable to an owed value of the worker's shape
//!   keys      the message names that owed value in `correlationKeys` (it matches only while owed)
//!   flip      the message also sets the marker to delivered in `processVariables`
//!   instance  the message also names the process instance: camunda-worker's request at its
//!             defaults (`--correlate-by both`)
//! The ceiling still does none of the worker's other work (no lease, no reconciler, no retries).
//!
//! With --async-response-timeout-ms 0 it never parks a long poll, so it can be stopped without
//! leaving a parked request behind that the engine would hand the next tasks to (the bench's
//! engine warm-up uses that).
//!
//! Runs until SIGTERM/SIGINT or --limit-secs, then prints its counters as one JSON line on stdout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

/// How much of camunda-worker's ledger the ceiling writes (`--ledger`); each level includes the
/// ones before it.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Ledger {
    None,
    Marker,
    Keys,
    Flip,
    Instance,
}

impl Ledger {
    fn parse(text: &str) -> Result<Ledger, String> {
        Ok(match text {
            "none" => Ledger::None,
            "marker" => Ledger::Marker,
            "keys" => Ledger::Keys,
            "flip" => Ledger::Flip,
            "instance" => Ledger::Instance,
            other => {
                return Err(format!(
                    "--ledger: `{other}` is not one of none, marker, keys, flip, instance"
                ))
            }
        })
    }
}

/// camunda-worker's marker variable (its default `--marker-variable`).
const MARKER: &str = "camundaWorkerFollowUp";

/// An owed marker as camunda-worker writes it: `owed:<topic>:<due, 13 digits of Unix ms>:<task id>`.
fn owed_marker(task_id: &str, delay: Duration) -> String {
    let due = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        + delay;
    format!("owed:messageSending:{:013}:{task_id}", due.as_millis())
}

/// A String variable in the REST API's typed form.
fn string_variable(value: &str) -> Value {
    json!({"type": "String", "value": value, "valueInfo": {}})
}

#[derive(Default)]
struct Counters {
    fetches: AtomicU64,
    fetched: AtomicU64,
    completes: AtomicU64,
    messages: AtomicU64,
    message_retries: AtomicU64,
    errors: AtomicU64,
}

struct Settings {
    base: String,
    fetchers: usize,
    max_tasks: u64,
    delay: Duration,
    limit: Duration,
    long_poll_ms: u64,
    worker_id: String,
    ledger: Ledger,
}

fn parse_args() -> Result<Settings, String> {
    let mut settings = Settings {
        base: String::new(),
        fetchers: 2,
        max_tasks: 200,
        delay: Duration::from_millis(2000),
        limit: Duration::from_secs(900),
        long_poll_ms: 30000,
        worker_id: format!("bench-ceiling-{}", std::process::id()),
        ledger: Ledger::None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |text: String| -> Result<u64, String> {
            text.parse::<u64>()
                .map_err(|_| format!("{flag}: `{text}` is not a whole number"))
        };
        match flag.as_str() {
            "--engine-url" => settings.base = value()?.trim_end_matches('/').to_owned(),
            "--fetchers" => settings.fetchers = number(value()?)?.max(1) as usize,
            "--max-tasks" => settings.max_tasks = number(value()?)?.max(1),
            "--delay-ms" => settings.delay = Duration::from_millis(number(value()?)?),
            "--limit-secs" => settings.limit = Duration::from_secs(number(value()?)?),
            "--async-response-timeout-ms" => settings.long_poll_ms = number(value()?)?,
            "--ledger" => settings.ledger = Ledger::parse(&value()?)?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if settings.base.is_empty() {
        return Err("--engine-url is required".to_owned());
    }
    Ok(settings)
}

#[tokio::main]
async fn main() {
    let settings = match parse_args() {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("ceiling: {e}");
            std::process::exit(2);
        }
    };
    let http = reqwest::Client::builder()
        .user_agent("bench-ceiling")
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client");
    let counters = Arc::new(Counters::default());
    let deadline = Instant::now() + settings.limit;
    eprintln!(
        "ceiling: {} fetchers x maxTasks {} against {}",
        settings.fetchers, settings.max_tasks, settings.base
    );
    for fetcher in 0..settings.fetchers {
        tokio::spawn(fetch_loop(
            http.clone(),
            Arc::clone(&settings),
            Arc::clone(&counters),
            deadline,
            fetcher,
        ));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = tokio::time::sleep_until(deadline) => eprintln!("ceiling: --limit-secs reached"),
    }
    let c = &counters;
    println!(
        "{}",
        json!({
            "fetches": c.fetches.load(Ordering::Relaxed),
            "fetched": c.fetched.load(Ordering::Relaxed),
            "completes": c.completes.load(Ordering::Relaxed),
            "messages": c.messages.load(Ordering::Relaxed),
            "message_retries": c.message_retries.load(Ordering::Relaxed),
            "errors": c.errors.load(Ordering::Relaxed),
        })
    );
}

async fn fetch_loop(
    http: reqwest::Client,
    s: Arc<Settings>,
    c: Arc<Counters>,
    deadline: Instant,
    fetcher: usize,
) {
    let url = format!("{}/external-task/fetchAndLock", s.base);
    // One worker id per fetcher: the engine cancels an older parked long poll of the same worker id.
    let worker_id = format!("{}-{fetcher}", s.worker_id);
    let body = json!({
        "workerId": worker_id,
        "maxTasks": s.max_tasks,
        "asyncResponseTimeout": s.long_poll_ms,
        "topics": [{"topicName": "messageSending", "lockDuration": 60000}],
    });
    while Instant::now() < deadline {
        c.fetches.fetch_add(1, Ordering::Relaxed);
        let reply = http
            .post(&url)
            .json(&body)
            .timeout(Duration::from_secs(40))
            .send()
            .await;
        let tasks = match reply {
            Ok(r) if r.status().is_success() => r.json::<Vec<Value>>().await.ok(),
            _ => None,
        };
        let Some(tasks) = tasks else {
            c.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        c.fetched.fetch_add(tasks.len() as u64, Ordering::Relaxed);
        if tasks.is_empty() && s.long_poll_ms == 0 {
            // Without long polling, do not spin on an empty engine.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for task in tasks {
            let worker_id = worker_id.clone();
            tokio::spawn(handle(
                http.clone(),
                Arc::clone(&s),
                Arc::clone(&c),
                task,
                worker_id,
            ));
        }
    }
}

async fn handle(
    http: reqwest::Client,
    s: Arc<Settings>,
    c: Arc<Counters>,
    task: Value,
    worker_id: String,
) {
    let (Some(id), Some(key)) = (task["id"].as_str(), task["businessKey"].as_str()) else {
        c.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let owed = owed_marker(id, s.delay);
    let mut complete = json!({
        "workerId": worker_id,
        "variables": {
            "var1": {"type": "Integer", "value": 1},
            "var2": {"type": "String", "value": "value"},
        },
    });
    if s.ledger >= Ledger::Marker {
        complete["variables"][MARKER] = string_variable(&owed);
    }
    let url = format!("{}/external-task/{id}/complete", s.base);
    match http
        .post(&url)
        .json(&complete)
        .timeout(Duration::from_secs(30))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {
            c.completes.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            c.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    tokio::time::sleep(s.delay).await;
    let mut message = json!({"messageName": "sample_response", "businessKey": key});
    if s.ledger >= Ledger::Keys {
        message["correlationKeys"] = json!({ MARKER: string_variable(&owed) });
    }
    if s.ledger >= Ledger::Flip {
        message["processVariables"] =
            json!({ MARKER: string_variable(&format!("delivered:{id}")) });
    }
    if s.ledger >= Ledger::Instance {
        let Some(instance) = task["processInstanceId"].as_str() else {
            c.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        message["processInstanceId"] = json!(instance);
    }
    let url = format!("{}/message", s.base);
    // A 400 mismatch means the instance is not at the catch event yet: retry briefly (bounded).
    for _ in 0..50 {
        match http
            .post(&url)
            .json(&message)
            .timeout(Duration::from_secs(30))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                c.messages.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(r) if r.status() == reqwest::StatusCode::BAD_REQUEST => {
                c.message_retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => break,
        }
    }
    c.errors.fetch_add(1, Ordering::Relaxed);
}
