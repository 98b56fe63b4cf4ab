//! The neighbour: a second client on the engine, doing its own small job at a fixed rate, so that
//! the benchmark can show what a worker draining a backlog does to everyone else on the engine.
//!
//! It starts instances of its own process (`--process-key`, one external task on `--topic`, then
//! the end) at `--rate` per second, open loop (a start does not wait for the one before), serves
//! that topic with long polls and completes each task at once. For every instance started at least
//! `--measure-after-secs` after its own start it records three round trips: the start request,
//! the `complete` request, and the whole instance (start sent to `complete` answered: what a user
//! of that process waits).
//!
//! neighbour --engine-url URL [--rate 20] [--secs 30] [--measure-after-secs 5]
//!           [--process-key neighbour_task] [--topic neighbourTask]
//!
//! Starts for `--secs`, then waits up to 60 s for the instances it started to be completed, and
//! prints one JSON line on stdout: counts, and p50/p90/p99/max in milliseconds of each round trip.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

struct Settings {
    base: String,
    rate: f64,
    secs: u64,
    measure_after: Duration,
    process_key: String,
    topic: String,
}

fn parse_args() -> Result<Settings, String> {
    let mut s = Settings {
        base: String::new(),
        rate: 20.0,
        secs: 30,
        measure_after: Duration::from_secs(5),
        process_key: "neighbour_task".to_owned(),
        topic: "neighbourTask".to_owned(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || -> Result<u64, String> {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: `{value}` is not a whole number"))
        };
        match flag.as_str() {
            "--engine-url" => s.base = value.trim_end_matches('/').to_owned(),
            "--rate" => s.rate = number()?.max(1) as f64,
            "--secs" => s.secs = number()?.max(1),
            "--measure-after-secs" => s.measure_after = Duration::from_secs(number()?),
            "--process-key" => s.process_key = value,
            "--topic" => s.topic = value,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if s.base.is_empty() {
        return Err("--engine-url is required".to_owned());
    }
    Ok(s)
}

/// What one run saw. `open` maps each instance's business key to when its start was sent and
/// whether it is measured; it empties as the instances' tasks are completed.
#[derive(Default)]
struct Record {
    open: HashMap<String, (Instant, bool)>,
    start_ms: Vec<f64>,
    complete_ms: Vec<f64>,
    instance_ms: Vec<f64>,
}

#[derive(Default)]
struct Counters {
    started: AtomicU64,
    start_errors: AtomicU64,
    fetches: AtomicU64,
    completed: AtomicU64,
    complete_errors: AtomicU64,
}

struct Shared {
    s: Settings,
    http: reqwest::Client,
    began: Instant,
    record: Mutex<Record>,
    counters: Counters,
    stop_fetching: AtomicBool,
}

impl Shared {
    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50, p90, p99 and max of `values` (nearest rank), rounded to 0.1 ms.
fn percentiles(values: &mut [f64]) -> Value {
    if values.is_empty() {
        return json!(null);
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        (values[rank - 1] * 10.0).round() / 10.0
    };
    json!({"count": values.len(), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0)})
}

#[tokio::main]
async fn main() {
    let s = match parse_args() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("neighbour: {e}");
            std::process::exit(2);
        }
    };
    let http = reqwest::Client::builder()
        .user_agent("bench-neighbour")
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client");
    let shared = Arc::new(Shared {
        s,
        http,
        began: Instant::now(),
        record: Mutex::default(),
        counters: Counters::default(),
        stop_fetching: AtomicBool::new(false),
    });
    eprintln!(
        "neighbour: {}/s of {} for {} s against {}",
        shared.s.rate, shared.s.process_key, shared.s.secs, shared.s.base
    );
    // Two fetchers: one is always parked while the other's tasks are handed out.
    for fetcher in 0..2 {
        tokio::spawn(fetch_loop(Arc::clone(&shared), fetcher));
    }
    let interval = Duration::from_secs_f64(1.0 / shared.s.rate);
    let count = (shared.s.secs as f64 * shared.s.rate) as u64;
    for i in 0..count {
        tokio::time::sleep_until(shared.began + interval * i as u32).await;
        tokio::spawn(start_one(Arc::clone(&shared), i));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let c = &shared.counters;
        let settled = c.started.load(Ordering::Relaxed) + c.start_errors.load(Ordering::Relaxed);
        if settled == count && shared.record().open.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shared.stop_fetching.store(true, Ordering::Relaxed);
    let c = &shared.counters;
    let mut r = shared.record();
    let unfinished = r.open.len();
    println!(
        "{}",
        json!({
            "rate": shared.s.rate,
            "secs": shared.s.secs,
            "measure_after_secs": shared.s.measure_after.as_secs(),
            "started": c.started.load(Ordering::Relaxed),
            "start_errors": c.start_errors.load(Ordering::Relaxed),
            "fetches": c.fetches.load(Ordering::Relaxed),
            "completed": c.completed.load(Ordering::Relaxed),
            "complete_errors": c.complete_errors.load(Ordering::Relaxed),
            "unfinished": unfinished,
            "start_ms": percentiles(&mut r.start_ms),
            "complete_ms": percentiles(&mut r.complete_ms),
            "instance_ms": percentiles(&mut r.instance_ms),
        })
    );
    // The parked polls are not waited for: the process exits with them.
    std::process::exit(0);
}

async fn start_one(sh: Arc<Shared>, i: u64) {
    let url = format!(
        "{}/process-definition/key/{}/start",
        sh.s.base, sh.s.process_key
    );
    let key = format!("neighbour-{i}");
    let sent = Instant::now();
    let measured = sent.duration_since(sh.began) >= sh.s.measure_after;
    // Open before the start is sent: its task can be completed before this reply is read.
    sh.record().open.insert(key.clone(), (sent, measured));
    let reply = sh
        .http
        .post(&url)
        .json(&json!({"businessKey": key}))
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    let started = matches!(&reply, Ok(r) if r.status().is_success());
    let mut r = sh.record();
    if !started {
        r.open.remove(&key);
        sh.counters.start_errors.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if measured {
        r.start_ms.push(ms(sent.elapsed()));
    }
    sh.counters.started.fetch_add(1, Ordering::Relaxed);
}

async fn fetch_loop(sh: Arc<Shared>, fetcher: usize) {
    let url = format!("{}/external-task/fetchAndLock", sh.s.base);
    let worker_id = format!("bench-neighbour-{}-{fetcher}", std::process::id());
    let body = json!({
        "workerId": worker_id,
        "maxTasks": 50,
        "asyncResponseTimeout": 10000,
        "topics": [{"topicName": sh.s.topic, "lockDuration": 60000}],
    });
    while !sh.stop_fetching.load(Ordering::Relaxed) {
        sh.counters.fetches.fetch_add(1, Ordering::Relaxed);
        let reply = sh
            .http
            .post(&url)
            .json(&body)
            .timeout(Duration::from_secs(20))
            .send()
            .await;
        let tasks = match reply {
            Ok(r) if r.status().is_success() => r.json::<Vec<Value>>().await.ok(),
            _ => None,
        };
        let Some(tasks) = tasks else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        for task in tasks {
            tokio::spawn(complete(Arc::clone(&sh), task, worker_id.clone()));
        }
    }
}

async fn complete(sh: Arc<Shared>, task: Value, worker_id: String) {
    let (Some(id), Some(key)) = (task["id"].as_str(), task["businessKey"].as_str()) else {
        sh.counters.complete_errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let url = format!("{}/external-task/{id}/complete", sh.s.base);
    let sent = Instant::now();
    let reply = sh
        .http
        .post(&url)
        .json(&json!({"workerId": worker_id}))
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    match reply {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            eprintln!("neighbour: complete {id}: {status} {body:.300}");
            sh.counters.complete_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Err(e) => {
            eprintln!("neighbour: complete {id}: {e}");
            sh.counters.complete_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    let answered = Instant::now();
    sh.counters.completed.fetch_add(1, Ordering::Relaxed);
    let mut r = sh.record();
    // A task of an instance this run did not start (none on a fresh engine) is not measured.
    if let Some((started, true)) = r.open.remove(key) {
        r.complete_ms.push(ms(answered - sent));
        r.instance_ms.push(ms(answered - started));
    }
}
