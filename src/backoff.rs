//! Exponential backoff with jitter, for every "try again later" in the worker: a poll against an
//! engine that is down, a completion that hit a 5xx, a message sent before the instance arrived.
//!
//! Jitter matters with replicas: three workers that lost the engine at the same moment must not
//! knock on its door in lockstep when it comes back.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The first delay after a failure.
pub const INITIAL_DELAY: Duration = Duration::from_millis(500);

/// A backoff sequence: about 0.5 s, 1 s, 2 s, ... up to a cap; `reset` after a success starts
/// again from the beginning.
///
/// Each delay is drawn from the upper half of its step ("equal jitter"): never above the cap the
/// operator configured, never near zero, and spread enough that replicas drift apart.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
}

impl Backoff {
    /// Starts at [`INITIAL_DELAY`] and doubles up to `max_delay`.
    pub fn new(max_delay: Duration) -> Self {
        Self::starting_at(INITIAL_DELAY, max_delay)
    }

    /// Starts at `initial` and doubles up to `max_delay`.
    pub fn starting_at(initial: Duration, max_delay: Duration) -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(initial.min(max_delay))
            .with_max_delay(max_delay.max(initial.min(max_delay)))
            .with_factor(2.0)
            .without_max_times();
        Backoff {
            builder,
            delays: builder.build(),
        }
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        // `without_max_times` makes the sequence endless; the fallback only guards the type.
        let step = self.delays.next().unwrap_or(INITIAL_DELAY);
        step.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    /// Starts the sequence over, after a success.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_never_below_the_start_and_reset_starts_over() {
        let cap = Duration::from_secs(4);
        let mut backoff = Backoff::new(cap);
        let delays: Vec<_> = (0..12).map(|_| backoff.next_delay()).collect();
        assert!(delays.iter().all(|d| *d >= INITIAL_DELAY / 2), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= cap), "{delays:?}");
        assert!(delays[11] >= cap / 2, "{delays:?}");
        assert!(delays[0] <= INITIAL_DELAY, "{delays:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= INITIAL_DELAY);
    }
}
