//! A Camunda cluster for the tests: PostgreSQL, two engine nodes of the bundled jar and an HAProxy
//! in front, started by `engine/engine.sh cluster start` on free loopback ports. Every part exits
//! by itself when this test process ends (the script's parent-pid watchdogs).

use std::net::TcpListener;
use std::process::Command;
use std::sync::OnceLock;

use super::engine::{free_port, script};

/// A running cluster: the load balancer's and each node's engine-rest URL.
pub struct RealCluster {
    pub base_port: u16,
    pub balancer: String,
    pub nodes: Vec<String>,
}

/// A base port P with P (load balancer), P+1, P+2 (nodes) and P+50 (PostgreSQL) free right now.
fn free_base_port() -> u16 {
    for _ in 0..200 {
        let base = 20_000 + (fastrand_u16() % 20_000);
        let ports = [base, base + 1, base + 2, base + 50];
        if ports
            .iter()
            .all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        {
            return base;
        }
    }
    panic!("no free base port for a cluster");
}

fn fastrand_u16() -> u16 {
    // The low bits of a fresh ephemeral port are random enough to spread clusters apart.
    free_port()
}

impl RealCluster {
    /// Starts a two-node cluster; panics with the script's output when it cannot.
    pub fn start() -> RealCluster {
        let base_port = free_base_port();
        let output = Command::new("bash")
            .arg(script())
            .args(["cluster", "start", "--nodes", "2", "--base-port"])
            .arg(base_port.to_string())
            .args(["--", "--logging.level.root=WARN"])
            .env("ENGINE_PARENT_PID", std::process::id().to_string())
            .output()
            .expect("run engine/engine.sh (bash must be installed)");
        if !output.status.success() {
            panic!(
                "the cluster could not start (engine/engine.sh cluster start exited {}):\n{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let urls: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(urls.len(), 3, "balancer and two nodes: {urls:?}");
        RealCluster {
            base_port,
            balancer: urls[0].clone(),
            nodes: urls[1..].to_vec(),
        }
    }

    fn node_command(&self, sub: &str, index: usize, extra: &[&str]) {
        let output = Command::new("bash")
            .arg(script())
            .args(["cluster", sub, &index.to_string()])
            .args(extra)
            .args(["--base-port", &self.base_port.to_string()])
            .env("ENGINE_PARENT_PID", std::process::id().to_string())
            .output()
            .expect("run engine/engine.sh");
        assert!(
            output.status.success(),
            "engine.sh cluster {sub} {index}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `kill -9` of node `index` (1-based). The node is started again by
    /// [`KilledNode::restart`], or when the guard is dropped (a failing test leaves the shared
    /// cluster whole for the next one).
    pub fn kill_node(&self, index: usize) -> KilledNode<'_> {
        self.node_command("stop-node", index, &["--kill"]);
        KilledNode {
            cluster: self,
            index,
            restarted: false,
        }
    }
}

/// A node that was killed; see [`RealCluster::kill_node`].
pub struct KilledNode<'a> {
    cluster: &'a RealCluster,
    index: usize,
    restarted: bool,
}

impl KilledNode<'_> {
    /// Starts the node again and waits until it is ready.
    pub fn restart(mut self) {
        self.cluster.node_command("start-node", self.index, &[]);
        self.restarted = true;
    }
}

impl Drop for KilledNode<'_> {
    fn drop(&mut self) {
        if !self.restarted {
            let _ = Command::new("bash")
                .arg(script())
                .args(["cluster", "start-node", &self.index.to_string()])
                .args(["--base-port", &self.cluster.base_port.to_string()])
                .env("ENGINE_PARENT_PID", std::process::id().to_string())
                .output();
        }
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args([
                "cluster",
                "stop",
                "--base-port",
                &self.base_port.to_string(),
            ])
            .output();
    }
}

/// The cluster the cluster tests share (they run one at a time, see scripts/test.sh).
pub fn shared_cluster() -> &'static RealCluster {
    static SHARED: OnceLock<RealCluster> = OnceLock::new();
    SHARED.get_or_init(RealCluster::start)
}
