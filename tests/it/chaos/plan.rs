//! What a chaos run does, all drawn from one seed: the request faults of each proxy, the load,
//! and the process faults (workers and engine nodes killed, stopped, paused) and their pauses.

use std::time::Duration;

use crate::support::proxy::Mix;

/// A run's settings; the same seed draws the same faults in the same order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    /// How long faults are injected and instances keep arriving.
    pub chaos_for: Duration,
    /// How long, once the faults have healed, every instance has to finish.
    pub heal_limit: Duration,
    /// Instances started per second: of the bundled process; business keys of the looping one
    /// (each started in every tenant, so three instances); of the plain task.
    pub bundled_per_s: f64,
    pub loops_per_s: f64,
    pub plain_per_s: f64,
    /// Rounds of the looping process (task → message → task ...).
    pub rounds: u32,
    /// One looping business key (and one plain task) in this many fails on purpose.
    pub fail_one_in: u32,
    /// The request faults of every proxy: for the long poll, and for every other call.
    pub fetch: Mix,
    pub other: Mix,
    /// The pause between two process faults is drawn between these.
    pub between_process_faults: (Duration, Duration),
}

/// A fault of a process: a worker replica or an engine node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessFault {
    /// `kill -9` of replica `replica`, started again after `down`.
    KillWorker { replica: usize, down: Duration },
    /// SIGTERM of replica `replica`: it must exit within its grace; started again after `down`.
    StopWorker { replica: usize, down: Duration },
    /// Every replica stopped with SIGTERM and started again, one after the other.
    RollingRestart,
    /// SIGSTOP of engine node `node` (1-based), SIGCONT after `paused`.
    PauseNode { node: usize, paused: Duration },
    /// `kill -9` of engine node `node`, started again after `down` (its state is in PostgreSQL).
    KillNode { node: usize, down: Duration },
}

impl Plan {
    /// The gate's run: a minute of faults, every kind of them, on the cluster.
    pub fn gate(seed: u64) -> Plan {
        Plan {
            seed,
            chaos_for: Duration::from_secs(60),
            heal_limit: Duration::from_secs(240),
            bundled_per_s: 1.5,
            loops_per_s: 0.5,
            plain_per_s: 1.0,
            rounds: 3,
            fail_one_in: 4,
            fetch: Mix {
                close_before: 0.03,
                lost_504: 0.03,
                lost_reset: 0.02,
                cut_body: 0.02,
                status_503: 0.03,
                delay: 0.05,
                max_delay: Duration::from_secs(2),
            },
            other: Mix::even(0.03, Duration::from_secs(2)),
            between_process_faults: (Duration::from_secs(4), Duration::from_secs(10)),
        }
    }

    /// A soak's run: the gate's mix for `chaos_for`.
    pub fn soak(seed: u64, chaos_for: Duration) -> Plan {
        Plan {
            chaos_for,
            heal_limit: Duration::from_secs(600),
            ..Plan::gate(seed)
        }
    }

    /// The next process fault and the pause before it, for `replicas` workers and `nodes` engine
    /// nodes (no node fault with a single node: it would be an outage, tested elsewhere).
    pub fn next_fault(
        &self,
        rng: &mut fastrand::Rng,
        replicas: usize,
        nodes: usize,
    ) -> (Duration, ProcessFault) {
        let (low, high) = self.between_process_faults;
        let pause = between(rng, low, high);
        let kinds = if nodes > 1 { 5 } else { 3 };
        let fault = match rng.usize(0..kinds) {
            0 => ProcessFault::KillWorker {
                replica: rng.usize(0..replicas),
                down: between(rng, Duration::ZERO, Duration::from_secs(3)),
            },
            1 => ProcessFault::StopWorker {
                replica: rng.usize(0..replicas),
                down: between(rng, Duration::ZERO, Duration::from_secs(3)),
            },
            2 => ProcessFault::RollingRestart,
            3 => ProcessFault::PauseNode {
                node: rng.usize(1..=nodes),
                paused: between(rng, Duration::from_secs(1), Duration::from_secs(6)),
            },
            _ => ProcessFault::KillNode {
                node: rng.usize(1..=nodes),
                down: between(rng, Duration::ZERO, Duration::from_secs(5)),
            },
        };
        (pause, fault)
    }
}

fn between(rng: &mut fastrand::Rng, low: Duration, high: Duration) -> Duration {
    let span = u64::try_from((high - low).as_millis()).unwrap_or(u64::MAX);
    low + Duration::from_millis(rng.u64(0..=span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_draws_the_same_faults_and_every_kind_shows_up() {
        let plan = Plan::gate(42);
        let draw = || {
            let mut rng = fastrand::Rng::with_seed(plan.seed);
            (0..200)
                .map(|_| plan.next_fault(&mut rng, 3, 2))
                .collect::<Vec<_>>()
        };
        let faults = draw();
        assert_eq!(faults, draw());
        let kinds = |f: &ProcessFault| std::mem::discriminant(f);
        let seen: std::collections::HashSet<_> = faults.iter().map(|(_, f)| kinds(f)).collect();
        assert_eq!(seen.len(), 5, "{faults:?}");
        for (pause, _) in &faults {
            assert!((Duration::from_secs(4)..=Duration::from_secs(10)).contains(pause));
        }
    }

    #[test]
    fn a_single_node_is_never_paused_or_killed() {
        let plan = Plan::gate(7);
        let mut rng = fastrand::Rng::with_seed(plan.seed);
        for _ in 0..200 {
            let (_, fault) = plan.next_fault(&mut rng, 3, 1);
            assert!(!matches!(
                fault,
                ProcessFault::PauseNode { .. } | ProcessFault::KillNode { .. }
            ));
        }
    }
}
