//! One chaos run from start to verdict: the stage set up, instances arriving and faults drawn for
//! the plan's time, the faults healed, every instance given time to finish, every replica stopped,
//! and the checker's verdict with the run's figures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::proxy::FaultKind;

use super::check::{check, Figures, Violation};
use super::observe::{observe, FAILING};
use super::plan::Plan;
use super::scene::{Processes, Scene, Topology};

/// A worker's peak RSS above this is a violation (a debug build, three routes' worth of state).
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// Requests per second one proxy may carry to a node that is down or paused: far above what the
/// worker's backoff sends, far below a tight loop.
const OUTAGE_RATE_LIMIT: f64 = 50.0;

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    pub topology: Topology,
    pub violations: Vec<String>,
    pub figures: Figures,
    /// Request faults the proxies injected, by kind.
    pub request_faults: BTreeMap<String, usize>,
    /// Replies lost after the engine committed the request (504, reset, cut body).
    pub lost_after_commit: usize,
    pub process_faults: BTreeMap<&'static str, usize>,
    /// SIGTERMs during the faults that ended with exit 1 (calls still open at the grace's end).
    pub stops_exit_1: usize,
    pub peak_rss_kib: u64,
    /// The highest request rate one proxy carried to a node while it was down or paused.
    pub outage_rate: f64,
    pub starts_failed: usize,
    pub heal: Duration,
}

impl Outcome {
    /// One line for the log and a soak's figures file.
    pub fn summary(&self) -> String {
        format!(
            "seed {} on {:?}: {} instances, {} rounds, {} messages accepted, {} work reruns, {} incidents; \
             request faults {:?} ({} replies lost after commit); process faults {:?} ({} SIGTERM exits 1); \
             peak RSS {:.1} MiB; outage rate {:.1}/s; {} starts failed; healed in {:.0} s; {} violations",
            self.seed,
            self.topology,
            self.figures.instances,
            self.figures.rounds,
            self.figures.messages_accepted,
            self.figures.work_reruns,
            self.figures.incidents,
            self.request_faults,
            self.lost_after_commit,
            self.process_faults,
            self.stops_exit_1,
            self.peak_rss_kib as f64 / 1024.0,
            self.outage_rate,
            self.starts_failed,
            self.heal.as_secs_f64(),
            self.violations.len(),
        )
    }
}

/// Runs `plan` on `topology`.
pub async fn run(topology: Topology, plan: &Plan) -> Outcome {
    let name = format!(
        "s{}_{}",
        plan.seed,
        if topology == Topology::Cluster {
            "c"
        } else {
            "n"
        }
    );
    let mut scene = Scene::start(topology, &name, plan).await;
    eprintln!(
        "chaos: seed {} on {topology:?}: faults for {:?}",
        plan.seed, plan.chaos_for
    );
    scene.set_chaos(Some(plan));
    let stop_load = CancellationToken::new();
    let starts_failed = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(arrivals(
        scene.rest_url.clone(),
        scene.processes.clone(),
        plan.clone(),
        stop_load.clone(),
        Arc::clone(&starts_failed),
    ));
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    let end = Instant::now() + plan.chaos_for;
    while Instant::now() < end {
        let (pause, fault) = plan.next_fault(&mut rng, scene.replicas.len(), scene.nodes());
        tokio::time::sleep(pause.min(end.saturating_duration_since(Instant::now()))).await;
        if Instant::now() >= end {
            break;
        }
        eprintln!("chaos: {fault:?}");
        tokio::task::block_in_place(|| scene.apply(fault));
        scene.sample_rss();
    }
    stop_load.cancel();
    load.await.expect("the arrivals do not panic");

    eprintln!("chaos: healing");
    let healing = Instant::now();
    scene.set_chaos(None);
    tokio::task::block_in_place(|| scene.heal());
    let finished = wait_finished(&scene, plan).await;
    let heal = healing.elapsed();
    scene.sample_rss();
    let final_exits = tokio::task::block_in_place(|| scene.stop_all());

    let observed = observe(&scene, plan.rounds).await;
    let (found, figures) = check(&observed);
    let mut violations = Vec::new();
    for violation in &found {
        violations.push(explain(&scene, violation).await);
    }
    if !finished {
        violations.push(format!(
            "not every instance finished within {:?} of healing",
            plan.heal_limit
        ));
    }
    judge_processes(&scene, &final_exits, &mut violations);
    let outage_rate = outage_rate(&scene);
    if outage_rate > OUTAGE_RATE_LIMIT {
        violations.push(format!(
            "a proxy carried {outage_rate:.1} requests/s to a node that was down (limit {OUTAGE_RATE_LIMIT})"
        ));
    }
    let (request_faults, lost_after_commit) = request_faults(&scene);
    Outcome {
        seed: plan.seed,
        topology,
        violations,
        figures,
        request_faults,
        lost_after_commit,
        process_faults: scene.process_faults.clone(),
        stops_exit_1: scene
            .replicas
            .iter()
            .flat_map(|r| &r.stop_exits)
            .filter(|c| **c == Some(1))
            .count(),
        peak_rss_kib: scene
            .replicas
            .iter()
            .map(|r| r.peak_rss_kib)
            .max()
            .unwrap_or(0),
        outage_rate,
        starts_failed: starts_failed.load(Ordering::SeqCst),
        heal,
    }
}

/// A violation with what it takes to find its cause: the instance's incidents from the engine's
/// history, and what the replicas logged about it.
async fn explain(scene: &Scene, violation: &Violation) -> String {
    let mut text = violation.to_string();
    let Some(instance) = violation.instance() else {
        return text;
    };
    let rest = crate::support::engine::Rest::new(&scene.rest_url);
    let incidents = rest
        .get("history/incident", &[("processInstanceId", instance)])
        .await;
    for incident in incidents.as_array().into_iter().flatten() {
        text.push_str(&format!(
            "\n    incident {} {} on {} created {} ({}): {}",
            incident["incidentType"],
            incident["configuration"],
            incident["executionId"],
            incident["createTime"],
            if incident["open"] == true {
                "open"
            } else {
                "closed"
            },
            incident["incidentMessage"]
        ));
    }
    for replica in &scene.replicas {
        for line in replica.log_lines_with(instance).iter().take(40) {
            text.push_str(&format!("\n    {}: {line}", replica.name));
        }
    }
    text
}

/// SIGTERM during the faults: exit 0, or 1 (calls still open when the grace ran out); the last
/// one, once healed: exit 0. No panic, memory under the bound.
fn judge_processes(scene: &Scene, final_exits: &[Option<i32>], violations: &mut Vec<String>) {
    for (replica, last) in scene.replicas.iter().zip(final_exits) {
        for code in &replica.stop_exits {
            if !matches!(code, Some(0 | 1)) {
                violations.push(format!(
                    "{} exited {code:?} after a SIGTERM during the faults",
                    replica.name
                ));
            }
        }
        if *last != Some(0) {
            violations.push(format!(
                "{} exited {last:?} after its last SIGTERM, once healed",
                replica.name
            ));
        }
        for line in replica.panics() {
            violations.push(format!("{} panicked: {line}", replica.name));
        }
        if replica.peak_rss_kib > RSS_LIMIT_KIB {
            violations.push(format!(
                "{} peaked at {} KiB of RSS (limit {RSS_LIMIT_KIB})",
                replica.name, replica.peak_rss_kib
            ));
        }
    }
}

/// The highest rate of requests one proxy sent to a node during one of its outages.
fn outage_rate(scene: &Scene) -> f64 {
    let mut highest: f64 = 0.0;
    let now = Instant::now();
    let wall = std::time::SystemTime::now();
    for (node, from, to) in &scene.node_outages {
        let seconds = (*to - *from).as_secs_f64().max(1.0);
        let (from, to) = (wall - (now - *from), wall - (now - *to));
        for proxied in scene.replicas.iter().flat_map(|r| &r.proxies) {
            if proxied.node != *node {
                continue;
            }
            let sent = proxied
                .proxy
                .exchanges()
                .iter()
                .filter(|e| e.sent >= from && e.sent <= to)
                .count();
            highest = highest.max(sent as f64 / seconds);
        }
    }
    highest
}

/// Request faults by kind, and how many of them lost a reply the engine had committed.
fn request_faults(scene: &Scene) -> (BTreeMap<String, usize>, usize) {
    let mut by_kind = BTreeMap::new();
    let mut lost = 0;
    for proxied in scene.replicas.iter().flat_map(|r| &r.proxies) {
        for applied in proxied.proxy.applied() {
            let kind = match applied.kind {
                FaultKind::Delay(_) => "delay".to_owned(),
                FaultKind::Status(code) => format!("status {code}"),
                other => format!("{other:?}"),
            };
            if matches!(
                applied.kind,
                FaultKind::ReplyLost504 | FaultKind::ReplyLostReset | FaultKind::CutBody
            ) {
                lost += 1;
            }
            *by_kind.entry(kind).or_insert(0) += 1;
        }
    }
    (by_kind, lost)
}

/// Instances arrive at the plan's rates until `stop`: the bundled process; the looping one, each
/// business key started in every tenant of [`super::scene::TENANTS`] (and without one), one key in
/// `fail_one_in` failing on purpose; the plain task, as many failing. Each start is its own
/// request with a bound: a paused node must not hold the arrivals up. A start that fails is
/// counted; one whose reply was lost may still have started, and the checker finds it in the
/// history all the same.
async fn arrivals(
    rest_url: String,
    processes: Processes,
    plan: Plan,
    stop: CancellationToken,
    failed: Arc<AtomicUsize>,
) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let mut starts = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut due = [0.0; 3];
    let mut counts = [0u64; 3];
    let failing = |count: u64| count % u64::from(plan.fail_one_in) == 0;
    while !stop.is_cancelled() {
        tick.tick().await;
        for (due, rate) in
            due.iter_mut()
                .zip([plan.bundled_per_s, plan.loops_per_s, plan.plain_per_s])
        {
            *due += rate / 10.0;
        }
        let mut start = |path: String, business_key: String| {
            let (http, failed) = (http.clone(), Arc::clone(&failed));
            let url = format!("{rest_url}/{path}/start");
            starts.spawn(async move {
                let sent = http
                    .post(url)
                    .json(&json!({"businessKey": business_key}))
                    .send()
                    .await;
                if !sent.is_ok_and(|reply| reply.status().is_success()) {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            });
        };
        while due[0] >= 1.0 {
            due[0] -= 1.0;
            counts[0] += 1;
            start(
                format!("process-definition/key/{}", processes.bundled.0),
                format!("b-{}", counts[0]),
            );
        }
        while due[1] >= 1.0 {
            due[1] -= 1.0;
            counts[1] += 1;
            let prefix = if failing(counts[1]) { FAILING } else { "l" };
            for definition in &processes.looping_definitions {
                start(
                    format!("process-definition/{definition}"),
                    format!("{prefix}-{}", counts[1]),
                );
            }
        }
        while due[2] >= 1.0 {
            due[2] -= 1.0;
            counts[2] += 1;
            let prefix = if failing(counts[2]) { FAILING } else { "p" };
            start(
                format!("process-definition/key/{}", processes.plain.0),
                format!("{prefix}-p{}", counts[2]),
            );
        }
    }
    while starts.join_next().await.is_some() {}
}

/// Waits until every instance has finished (or, failing on purpose, has its incident), up to
/// the plan's heal limit; whether they all did.
async fn wait_finished(scene: &Scene, plan: &Plan) -> bool {
    let rest = crate::support::engine::Rest::new(&scene.rest_url);
    let deadline = Instant::now() + plan.heal_limit;
    loop {
        let mut waiting = 0;
        let processes = &scene.processes;
        for key in [
            &processes.bundled.0,
            &processes.looping.0,
            &processes.plain.0,
        ] {
            let running = rest
                .count("process-instance/count", &[("processDefinitionKey", key)])
                .await;
            let failing = rest
                .count(
                    "incident/count",
                    &[("processDefinitionKeyIn", key.as_str())],
                )
                .await;
            waiting += running.saturating_sub(failing);
        }
        if waiting == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            eprintln!("chaos: {waiting} instances still waiting at the heal limit");
            return false;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
