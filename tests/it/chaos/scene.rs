//! The stage of a chaos run: the engine (the PostgreSQL cluster or one node), a fault proxy
//! between each worker replica and each engine it talks to, three replicas of the worker binary
//! with one configuration (as a Deployment runs them), and the process faults done to them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::cluster::RealCluster;
use crate::support::engine::{free_port, script, EngineOptions, RealEngine};
use crate::support::proxy::{Chaos, FaultProxy};
use crate::support::work::Script;
use crate::support::WorkerProcess;

use super::plan::{Plan, ProcessFault};

/// The worker replicas of a run, as a Deployment's `replicas: 3`.
pub const REPLICAS: usize = 3;

/// How long a SIGTERMed worker may take to exit: its 5 s grace plus a margin for a loaded machine.
const EXIT_LIMIT: Duration = Duration::from_secs(30);

/// Where the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// PostgreSQL, two nodes and HAProxy: replica 0 polls through the load balancer, the others
    /// every node.
    Cluster,
    /// One engine node (H2): every replica polls it.
    Single,
}

enum Engines {
    Cluster(RealCluster),
    Single(RealEngine),
}

impl Engines {
    fn start(topology: Topology) -> Engines {
        match topology {
            Topology::Cluster => Engines::Cluster(RealCluster::start()),
            // The harness quiets the engine's log (WARN).
            Topology::Single => Engines::Single(RealEngine::start(EngineOptions::default())),
        }
    }

    /// The engine-rest URL the test itself uses (the load balancer's on a cluster).
    fn rest_url(&self) -> String {
        match self {
            Engines::Cluster(cluster) => cluster.balancer.clone(),
            Engines::Single(engine) => engine.url.clone(),
        }
    }

    /// The engine-rest URLs replica `replica` talks to, each through a proxy of its own.
    fn upstreams_of(&self, replica: usize) -> Vec<String> {
        match self {
            Engines::Cluster(cluster) if replica == 0 => vec![cluster.balancer.clone()],
            Engines::Cluster(cluster) => cluster.nodes.clone(),
            Engines::Single(engine) => vec![engine.url.clone()],
        }
    }

    fn nodes(&self) -> usize {
        match self {
            Engines::Cluster(cluster) => cluster.nodes.len(),
            Engines::Single(_) => 1,
        }
    }
}

/// A proxy in front of one engine URL, and which node it is (0 for the load balancer).
pub struct Proxied {
    pub proxy: FaultProxy,
    pub node: usize,
}

/// One replica: its proxies, the running process and what its earlier runs left.
pub struct Replica {
    pub name: String,
    pub proxies: Vec<Proxied>,
    flags: Vec<String>,
    pub running: Option<WorkerProcess>,
    /// Earlier processes of this replica, kept for their logs.
    pub retired: Vec<WorkerProcess>,
    /// Exit codes after a SIGTERM during the faults (`None`: no exit within [`EXIT_LIMIT`]).
    pub stop_exits: Vec<Option<i32>>,
    /// The highest peak RSS seen of any of its processes, in KiB.
    pub peak_rss_kib: u64,
}

impl Replica {
    fn engine_urls(&self) -> String {
        let urls: Vec<String> = self
            .proxies
            .iter()
            .map(|p| format!("{}/engine-rest", p.proxy.url()))
            .collect();
        urls.join(",")
    }

    fn start(&mut self) {
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        self.running = Some(WorkerProcess::spawn(
            &self.name,
            &self.engine_urls(),
            &flags,
        ));
    }

    fn sample_rss(&mut self) {
        if let Some(worker) = &self.running {
            self.peak_rss_kib = self.peak_rss_kib.max(peak_rss_kib(worker.child.id()));
        }
    }

    /// `kill -9`: nothing in memory survives.
    fn kill(&mut self) {
        self.sample_rss();
        if let Some(mut worker) = self.running.take() {
            worker.kill_hard();
            self.retired.push(worker);
        }
    }

    /// SIGTERM and its exit code, bounded.
    fn stop(&mut self) -> Option<i32> {
        self.sample_rss();
        let mut worker = self.running.take()?;
        worker.signal("TERM");
        let code = wait_exit(&mut worker, EXIT_LIMIT);
        if code.is_none() {
            worker.kill_hard();
        }
        self.retired.push(worker);
        code
    }

    /// Every log line of every process of this replica that holds `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.retired
            .iter()
            .chain(&self.running)
            .flat_map(|w| {
                w.stderr()
                    .lines()
                    .filter(|l| l.contains(needle))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every log line of every process of this replica that says it panicked.
    pub fn panics(&self) -> Vec<String> {
        self.retired
            .iter()
            .chain(&self.running)
            .flat_map(|w| {
                w.stderr()
                    .lines()
                    .filter(|l| l.contains("panicked"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// The exit code within `limit`, or `None`.
fn wait_exit(worker: &mut WorkerProcess, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = worker.child.try_wait().ok().flatten() {
            return Some(status.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The peak resident set (VmHWM) of a process, 0 when it cannot be read.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The tenants the looping process is deployed for, besides none.
pub const TENANTS: [Option<&str>; 3] = [None, Some("tenant-a"), Some("tenant-b")];

/// The processes under test, renamed for this run: the bundled one (key, topic, message), the
/// looping one (key, topic, message) and the plain task (key, topic).
#[derive(Debug, Clone)]
pub struct Processes {
    pub bundled: (String, String, String),
    pub looping: (String, String, String),
    /// The looping process's definition ids, one per entry of [`TENANTS`].
    pub looping_definitions: Vec<String>,
    pub plain: (String, String),
}

/// The whole stage.
pub struct Scene {
    engines: Engines,
    pub rest_url: String,
    pub replicas: Vec<Replica>,
    pub processes: Processes,
    pub work: Script,
    _config: tempfile::NamedTempFile,
    /// Process faults done so far, by kind.
    pub process_faults: BTreeMap<&'static str, usize>,
    /// Node pauses and kills: (node, from, to) while it was unable to answer.
    pub node_outages: Vec<(usize, Instant, Instant)>,
}

/// The work of the looping process's follow-up and of the plain task's complete route: records
/// each run, takes 0–3 s, and fails on purpose for business keys starting with `fail`.
const WORK: &str = r#"
import json, os, random, sys, time
task = json.load(sys.stdin)
with open(os.path.join(sys.argv[1], "runs"), "a") as runs:
    runs.write(task["taskId"] + "\n")
time.sleep(random.uniform(0, 3))
if (task.get("businessKey") or "").startswith("fail"):
    print("failing on purpose", file=sys.stderr)
    sys.exit(1)
print("{}")
"#;

impl Scene {
    /// Starts the engine, deploys the processes under `run` names, and starts the replicas.
    pub async fn start(topology: Topology, run: &str, plan: &Plan) -> Scene {
        let engines = Engines::start(topology);
        let rest_url = engines.rest_url();
        let rest = crate::support::engine::Rest::new(&rest_url);
        let bundled = rest.deploy_variant(&format!("{run}_b")).await;
        let looping = (
            format!("chaos_{run}_loop"),
            format!("chaos_{run}_loop_task"),
            format!("chaos_{run}_loop_done"),
        );
        let bpmn =
            crate::support::work::looping_bpmn(&looping.0, &looping.1, &looping.2, plan.rounds);
        let mut looping_definitions = Vec::new();
        for tenant in TENANTS {
            let deployed = crate::subscriptions::deploy(&rest, &looping.0, bpmn.clone(), tenant);
            looping_definitions.push(deployed.await);
        }
        let plain = crate::complete_kind::deploy_plain(&rest, &format!("chaos_{run}")).await;
        let work = Script::write(&format!("#!{}\n{WORK}", crate::support::work::python()));
        let config = config_file(&bundled, &looping, &plain, &work);
        let mut replicas = Vec::new();
        for index in 0..REPLICAS {
            let mut proxies = Vec::new();
            for (i, upstream) in engines.upstreams_of(index).iter().enumerate() {
                let origin = upstream.trim_end_matches("/engine-rest");
                let node = if topology == Topology::Cluster && index == 0 {
                    0
                } else {
                    i + 1
                };
                proxies.push(Proxied {
                    proxy: FaultProxy::start(origin).await,
                    node,
                });
            }
            let flags = vec![
                "--config".to_owned(),
                config.path().to_str().unwrap().to_owned(),
                "--metrics-addr".to_owned(),
                format!("127.0.0.1:{}", free_port()),
                "--worker-id".to_owned(),
                format!("chaos-{index}"),
            ];
            let mut replica = Replica {
                name: format!("replica-{index}"),
                proxies,
                flags,
                running: None,
                retired: Vec::new(),
                stop_exits: Vec::new(),
                peak_rss_kib: 0,
            };
            replica.start();
            replicas.push(replica);
        }
        Scene {
            engines,
            rest_url,
            replicas,
            processes: Processes {
                bundled,
                looping,
                looping_definitions,
                plain,
            },
            work,
            _config: config,
            process_faults: BTreeMap::new(),
            node_outages: Vec::new(),
        }
    }

    /// Every proxy draws its faults from `plan`'s mixes (each from a seed of its own), or none.
    pub fn set_chaos(&self, plan: Option<&Plan>) {
        let mut n = 0;
        for replica in &self.replicas {
            for proxied in &replica.proxies {
                n += 1;
                proxied.proxy.set_chaos(plan.map(|plan| {
                    Chaos::new(
                        plan.seed.wrapping_mul(1000).wrapping_add(n),
                        plan.fetch,
                        plan.other,
                    )
                }));
            }
        }
    }

    pub fn nodes(&self) -> usize {
        self.engines.nodes()
    }

    /// Samples every running replica's peak RSS.
    pub fn sample_rss(&mut self) {
        for replica in &mut self.replicas {
            replica.sample_rss();
        }
    }

    /// Does one process fault, blocking (node restarts wait until the node is ready).
    pub fn apply(&mut self, fault: ProcessFault) {
        let kind = match fault {
            ProcessFault::KillWorker { replica, down } => {
                self.replicas[replica].kill();
                std::thread::sleep(down);
                self.replicas[replica].start();
                "worker kill -9"
            }
            ProcessFault::StopWorker { replica, down } => {
                let code = self.replicas[replica].stop();
                self.replicas[replica].stop_exits.push(code);
                std::thread::sleep(down);
                self.replicas[replica].start();
                "worker SIGTERM"
            }
            ProcessFault::RollingRestart => {
                for replica in &mut self.replicas {
                    let code = replica.stop();
                    replica.stop_exits.push(code);
                    replica.start();
                    std::thread::sleep(Duration::from_secs(1));
                }
                "rolling restart"
            }
            ProcessFault::PauseNode { node, paused } => {
                let pid = self.node_pid(node);
                let from = Instant::now();
                signal(pid, "STOP");
                std::thread::sleep(paused);
                signal(pid, "CONT");
                self.node_outages.push((node, from, Instant::now()));
                "node SIGSTOP"
            }
            ProcessFault::KillNode { node, down } => {
                let Engines::Cluster(cluster) = &self.engines else {
                    unreachable!("a single node is never killed");
                };
                let from = Instant::now();
                let killed = cluster.kill_node(node);
                std::thread::sleep(down);
                killed.restart();
                self.node_outages.push((node, from, Instant::now()));
                "node kill -9"
            }
        };
        *self.process_faults.entry(kind).or_default() += 1;
    }

    /// The pid of cluster node `node` (1-based), from the cluster's pid file.
    fn node_pid(&self, node: usize) -> u32 {
        let Engines::Cluster(cluster) = &self.engines else {
            unreachable!("a single node is never paused");
        };
        let file = script().parent().unwrap().join(format!(
            ".run/cluster-{}/node-{node}.pid",
            cluster.base_port
        ));
        read_pid(&file)
    }

    /// Every replica that is not running is started again.
    pub fn heal(&mut self) {
        for replica in &mut self.replicas {
            if !replica
                .running
                .as_mut()
                .is_some_and(WorkerProcess::is_running)
            {
                if let Some(worker) = replica.running.take() {
                    replica.retired.push(worker);
                }
                replica.start();
            }
        }
    }

    /// The last SIGTERM of every replica, once the faults have healed: each exit code.
    pub fn stop_all(&mut self) -> Vec<Option<i32>> {
        self.replicas.iter_mut().map(Replica::stop).collect()
    }
}

fn read_pid(file: &PathBuf) -> u32 {
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{} holds no pid: {e}", file.display()))
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// The replicas' one configuration: short locks, leases and backoffs, so that what a fault
/// strands comes back within the run; the bundled process's route, the looping process's with
/// the work as its command, and a complete route for the plain task running the same work (one
/// retry, then an incident).
fn config_file(
    bundled: &(String, String, String),
    looping: &(String, String, String),
    plain: &(String, String),
    work: &Script,
) -> tempfile::NamedTempFile {
    let text = format!(
        r#"lock_duration = "15s"
long_poll = "10s"
request_timeout = "10s"
max_backoff = "2s"
reconcile_interval = "5s"
follow_up_lease = "8s"
follow_up_retries = 1
follow_up_timeout = "20s"
shutdown_grace = "5s"
correlation_delay = "500ms"

[[route]]
topic = "{}"
message_name = "{}"

[[route]]
topic = "{}"
message_name = "{}"
command = ["{program}", "{dir}"]

[[route]]
topic = "{}"
kind = "complete"
command = ["{program}", "{dir}"]
retries = 1
retry_timeout = "1s"
"#,
        bundled.1,
        bundled.2,
        looping.1,
        looping.2,
        plain.1,
        program = work.program(),
        dir = work.dir()
    );
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}
