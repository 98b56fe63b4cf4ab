//! The worker-wide policy of follow-up delivery: what every route's follow-ups share (timeouts,
//! backoff, capacity, the marker variable, the retry budget, the bounds on work). What a route
//! decides on its own — its message — is [`super::FollowUpMessage`].

use std::time::Duration;

/// How follow-ups are delivered, worker-wide: the same for every route, so that a second route
/// cannot double the load on the engine nor the memory held.
#[derive(Debug, Clone)]
pub struct CorrelationPolicy {
    /// How long a message that finds no waiting instance is retried.
    pub timeout: Duration,
    /// Cap of the retry backoff.
    pub max_backoff: Duration,
    /// Follow-ups (and tasks that may produce one) held in memory at once; when they are all
    /// taken, fetching waits.
    pub capacity: usize,
    /// The name of the marker variable (`--marker-variable`).
    pub marker_variable: String,
    /// Requests per second a worker may spend on retries (`--retry-budget`).
    pub retry_budget: u32,
    /// Runs of a failing work after the first (`--follow-up-retries`).
    pub work_retries: u32,
    /// Works running at once (`--follow-up-concurrency`).
    pub work_concurrency: usize,
    /// How long a running work's claim on its follow-up lasts unrenewed (`--follow-up-lease`):
    /// what a crash costs before another worker runs the work again.
    pub lease: Duration,
}

/// The default of `--max-pending-follow-ups`: a few thousand. At the correlation delay of 2 s a
/// worker that completes 100 tasks a second holds 200; the rest is headroom for instances that are
/// slow to reach the catch event. When every follow-up is undeliverable, memory stays bounded by
/// this many follow-ups (about a kilobyte each).
pub const DEFAULT_CAPACITY: usize = 4096;

/// The default of `--follow-up-concurrency`: works (commands) running at once. Long work is
/// usually waiting on something else (a service, a file transfer), so more than the cores.
pub const DEFAULT_WORK_CONCURRENCY: usize = 16;

impl CorrelationPolicy {
    /// The lease variable that goes with the marker (see [`crate::ledger::lease_variable`]).
    pub fn lease_variable(&self) -> String {
        crate::ledger::lease_variable(&self.marker_variable)
    }
}

impl Default for CorrelationPolicy {
    fn default() -> Self {
        CorrelationPolicy {
            timeout: Duration::from_secs(300),
            max_backoff: Duration::from_secs(30),
            capacity: DEFAULT_CAPACITY,
            marker_variable: crate::ledger::DEFAULT_MARKER_VARIABLE.to_owned(),
            retry_budget: crate::budget::DEFAULT_RETRY_BUDGET,
            work_retries: 3,
            work_concurrency: DEFAULT_WORK_CONCURRENCY,
            lease: Duration::from_secs(60),
        }
    }
}
