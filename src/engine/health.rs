//! Whether an engine node is there, judged by every call the client makes — not only by the
//! fetch loop, which may not call at all while every slot is busy completing tasks.
//!
//! The first call that finds a node gone logs one WARN, the first that finds it back one INFO,
//! and `/readyz` follows; while the outage lasts, a reminder is logged once a minute. Refused
//! credentials are reported the same way, once, at ERROR: no retry can fix them.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::error::EngineError;

/// While a node stays unavailable, a reminder is logged this often.
const REMINDER: Duration = Duration::from_secs(60);

/// What the last call to a node said about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// No call has finished yet.
    Unknown,
    /// The node answered (a 4xx about one task or message still counts as an answer).
    Up,
    /// The node did not answer, or something in front of it answered for it (5xx pages).
    Down,
    /// The node refused the credentials, or they could not be obtained.
    Refused,
}

#[derive(Debug)]
struct State {
    reach: Reach,
    since: Instant,
    reminded: Instant,
}

/// The reachability of one engine node, fed by the outcome of every call to it.
#[derive(Debug)]
pub struct NodeHealth {
    node: String,
    state: Mutex<State>,
}

impl NodeHealth {
    /// A node nothing is known about yet.
    pub fn new(node: &str) -> Self {
        let now = Instant::now();
        NodeHealth {
            node: node.to_owned(),
            state: Mutex::new(State {
                reach: Reach::Unknown,
                since: now,
                reminded: now,
            }),
        }
    }

    /// What the last finished call said.
    pub fn reach(&self) -> Reach {
        self.lock().reach
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update writes whole fields: a poisoned lock still holds a consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the outcome of one call into account, logging a change once; returns the new reach
    /// when it changed. `anonymous` marks a call the engine answers without credentials: its
    /// success proves the node is there, not that the credentials are accepted.
    pub fn record(&self, outcome: Result<(), &EngineError>, anonymous: bool) -> Option<Reach> {
        if outcome.is_err_and(EngineError::retry_at_once) {
            // A connection closed under one call says nothing about the engine.
            return None;
        }
        let reach = match outcome {
            Ok(()) => Reach::Up,
            Err(e) if e.is_unauthorized() => Reach::Refused,
            Err(e) if e.engine_gone() => Reach::Down,
            Err(_) => Reach::Up,
        };
        let now = Instant::now();
        let mut state = self.lock();
        let before = state.reach;
        if anonymous && reach == Reach::Up && before == Reach::Refused {
            return None;
        }
        if before == reach {
            if reach == Reach::Down && now.duration_since(state.reminded) >= REMINDER {
                state.reminded = now;
                if let Err(e) = outcome {
                    warn!(
                        node = %self.node,
                        "engine still unavailable after {}s: {e}",
                        now.duration_since(state.since).as_secs()
                    );
                }
            }
            return None;
        }
        let outage = now.duration_since(state.since);
        state.reach = reach;
        state.since = now;
        state.reminded = now;
        drop(state);
        match (before, reach, outcome) {
            (_, Reach::Down, Err(e)) => {
                warn!(node = %self.node, "engine unavailable, retrying with backoff: {e}")
            }
            (_, Reach::Refused, Err(e)) => error!(node = %self.node, "{e}; retrying with backoff"),
            (Reach::Down, Reach::Up, _) => info!(
                node = %self.node,
                "the engine answers again after {}s",
                outage.as_secs()
            ),
            (Reach::Refused, Reach::Up, _) => {
                info!(node = %self.node, "the engine accepts the credentials again")
            }
            _ => {}
        }
        Some(reach)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn gone() -> EngineError {
        EngineError::UnexpectedReply {
            endpoint: "POST /message".into(),
            status: StatusCode::BAD_GATEWAY,
            excerpt: "bad gateway".into(),
        }
    }

    #[test]
    fn an_outage_is_a_transition_and_a_refusal_about_one_call_is_not() {
        let health = NodeHealth::new("n1");
        assert_eq!(health.record(Ok(()), false), Some(Reach::Up));
        assert_eq!(health.reach(), Reach::Up);
        let not_found = EngineError::Rejected {
            endpoint: "POST /external-task/x/complete".into(),
            status: StatusCode::NOT_FOUND,
            kind: "RestException".into(),
            message: "gone".into(),
            code: None,
        };
        assert_eq!(health.record(Err(&not_found), false), None);
        assert_eq!(health.reach(), Reach::Up);
        assert_eq!(health.record(Err(&gone()), false), Some(Reach::Down));
        assert_eq!(health.reach(), Reach::Down);
        assert_eq!(health.record(Ok(()), false), Some(Reach::Up));
    }
}
