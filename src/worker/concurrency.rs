//! How many tasks may be in flight: a limit that finds its own level from the engine's latency.
//!
//! The engine is what every worker shares. A fixed number of slots is either too few to drain a
//! backlog quickly or too many when the engine is busy with others: each task in flight is a
//! request the engine works on at once. So the limit moves, as TCP's window and Netflix's
//! concurrency-limits do, with the time `complete` takes as the signal:
//!
//! - The *baseline* is the usual round trip: a moving average of the mean round trips of busy
//!   windows of completions (a window is at least [`MIN_WINDOW`] completions, and half the limit).
//!   It is not the quickest answer ever seen: a worker that drains a backlog makes the engine's
//!   answers slower by itself, and that is the price of the best drain, not a sign to back off
//!   (BENCHMARKS.md, "Draining at the default and at fixed settings": 32 tasks in flight drained
//!   at 0.76 × what 128 did, and cost the engine more CPU per instance). A limit held near the
//!   quickest answers would stay that low. So an engine that became slower for good (a larger
//!   database, a busier node) becomes the usual within a few windows.
//! - A window whose mean round trip stays within [`TOLERANCE`] times the baseline, while the tasks
//!   in flight filled at least half the limit, raises it: doubling at first (the start is low, a
//!   drain should not wait long), then by its square root once the engine has pushed back.
//! - A window answered more slowly than that lowers the limit in proportion (the gradient, down to
//!   half at once): the engine slowed down suddenly (another client, a node in trouble). So does a
//!   completion that failed on the way (a timeout, a reset, a 5xx): by a tenth.
//! - The limit stays between [`MIN_LIMIT`] and `--max-tasks`. A worker that is not busy keeps its
//!   limit: an idle window says nothing about the engine.
//!
//! This file is the arithmetic; [`super::slot_limit`] applies it to the slots
//! [`super::admission`] hands out, and each task reports its completion's round trip there.

use std::time::Duration;

/// Where the limit starts (or `--max-tasks`, if lower): a worker that joins a busy engine asks
/// little of it until the engine's answers show there is room.
pub const INITIAL_LIMIT: usize = 16;

/// The lowest the limit goes (or `--max-tasks`, if lower): one fetch of a few tasks still costs the
/// engine less per task than fetches of one.
pub const MIN_LIMIT: usize = 4;

/// A window is at least this many completions, so one slow answer does not move the limit.
pub(crate) const MIN_WINDOW: usize = 8;

/// How much slower than the baseline a window's mean round trip may be before the limit comes down.
/// An engine answers a busy worker somewhat slower than an idle one without being overloaded.
const TOLERANCE: f64 = 2.0;

/// How much of a busy window's mean round trip goes into the baseline (see the module's doc).
const BASELINE_WEIGHT: f64 = 0.1;

/// What a failed completion does to the limit.
const FAILURE_BACKOFF: f64 = 0.9;

/// Completions of the current window.
#[derive(Debug, Default)]
struct Window {
    /// Completions that got an answer, and the sum of their round trips (seconds).
    answered: usize,
    round_trips: f64,
    /// Completions that failed on the way.
    failed: usize,
    /// The most tasks in flight while a completion of the window ended.
    busiest: usize,
}

/// The adaptive limit on tasks in flight.
#[derive(Debug)]
pub struct AdaptiveLimit {
    limit: f64,
    min: f64,
    max: f64,
    /// The usual round trip of a busy window (seconds): a moving average; `None` before the first
    /// window.
    baseline: Option<f64>,
    /// Doubling until the engine first pushes back.
    slow_start: bool,
    window: Window,
}

impl AdaptiveLimit {
    /// A limit that starts at [`INITIAL_LIMIT`] and never exceeds `max` (`--max-tasks`).
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        AdaptiveLimit {
            limit: INITIAL_LIMIT.min(max) as f64,
            min: MIN_LIMIT.min(max) as f64,
            max: max as f64,
            baseline: None,
            slow_start: true,
            window: Window::default(),
        }
    }

    /// The current limit: how many tasks may be in flight.
    pub fn current(&self) -> usize {
        self.limit as usize
    }

    /// A completion answered after `round_trip`, with `in_flight` tasks in flight. Returns the
    /// new limit when this closed a window that moved it.
    pub fn answered(&mut self, round_trip: Duration, in_flight: usize) -> Option<usize> {
        self.window.answered += 1;
        self.window.round_trips += round_trip.as_secs_f64();
        self.window.busiest = self.window.busiest.max(in_flight);
        self.close_window()
    }

    /// A completion failed on the way (no answer, or a 5xx), with `in_flight` tasks in flight.
    /// Returns the new limit when this closed a window that moved it.
    pub fn failed(&mut self, in_flight: usize) -> Option<usize> {
        self.window.failed += 1;
        self.window.busiest = self.window.busiest.max(in_flight);
        self.close_window()
    }

    /// Closes the window once it is full, and moves the limit by what it saw.
    fn close_window(&mut self) -> Option<usize> {
        let size = MIN_WINDOW.max(self.current() / 2);
        if self.window.answered + self.window.failed < size {
            return None;
        }
        let window = std::mem::take(&mut self.window);
        let before = self.current();
        if window.failed > 0 {
            self.slow_start = false;
            self.limit *= FAILURE_BACKOFF;
        } else {
            let mean = window.round_trips / window.answered as f64;
            let busy = window.busiest as f64 >= self.limit / 2.0;
            let baseline = self.baseline.unwrap_or(mean);
            let gradient = (TOLERANCE * baseline / mean).clamp(0.5, 1.0);
            // The baseline follows busy windows slowly, and quickly when answers get faster.
            if busy || self.baseline.is_none() {
                let next = baseline + BASELINE_WEIGHT * (mean - baseline);
                self.baseline = Some(if mean < baseline / 2.0 {
                    next.min(baseline * 0.95)
                } else {
                    next
                });
            }
            if gradient < 1.0 {
                self.slow_start = false;
                self.limit *= gradient;
            } else if busy {
                self.limit += if self.slow_start {
                    self.limit
                } else {
                    self.limit.sqrt()
                };
            }
        }
        self.limit = self.limit.clamp(self.min, self.max);
        (self.current() != before).then_some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `count` completions of `round_trip` with `in_flight` tasks in flight; the last limit
    /// reported (or the current one).
    fn feed(
        limit: &mut AdaptiveLimit,
        count: usize,
        round_trip: Duration,
        in_flight: usize,
    ) -> usize {
        for _ in 0..count {
            limit.answered(round_trip, in_flight);
        }
        limit.current()
    }

    /// Feeds whole windows of completions of `round_trip`, the worker busy at its limit, and
    /// returns the limit after each.
    fn windows(limit: &mut AdaptiveLimit, count: usize, round_trip: Duration) -> Vec<usize> {
        (0..count)
            .map(|_| {
                let busy = limit.current();
                feed(limit, MIN_WINDOW.max(busy / 2), round_trip, busy)
            })
            .collect()
    }

    #[test]
    fn a_busy_worker_on_an_engine_that_keeps_up_doubles_to_the_ceiling() {
        let mut limit = AdaptiveLimit::new(256);
        assert_eq!(limit.current(), INITIAL_LIMIT);
        assert_eq!(windows(&mut limit, 6, 5 * MS), [32, 64, 128, 256, 256, 256]);
    }

    #[test]
    fn an_idle_worker_keeps_its_limit() {
        let mut limit = AdaptiveLimit::new(256);
        feed(&mut limit, 100, 5 * MS, 2);
        assert_eq!(
            limit.current(),
            INITIAL_LIMIT,
            "two in flight show nothing about room"
        );
    }

    #[test]
    fn answers_slower_than_twice_the_usual_lower_the_limit_by_at_most_half_a_window() {
        let mut limit = AdaptiveLimit::new(256);
        windows(&mut limit, 4, 5 * MS);
        assert_eq!(limit.current(), 256);
        // Eight times as slow: halved twice, then less as the usual catches up (5 ms, 8.5, 11.7).
        let seen = windows(&mut limit, 3, 40 * MS);
        assert_eq!(seen, [128, 64, 37], "{seen:?}");
        let mut before = 37;
        for now in windows(&mut limit, 20, 40 * MS) {
            assert!(
                now * 2 >= before,
                "at most halved per window: {before} -> {now}"
            );
            before = now;
        }
    }

    #[test]
    fn answers_within_twice_the_usual_do_not_lower_the_limit() {
        let mut limit = AdaptiveLimit::new(64);
        windows(&mut limit, 1, 5 * MS);
        let seen = windows(&mut limit, 10, 9 * MS);
        assert!(seen.iter().all(|&now| now == 64), "{seen:?}");
    }

    #[test]
    fn after_pushing_back_the_limit_grows_by_its_square_root_not_by_doubling() {
        let mut limit = AdaptiveLimit::new(256);
        windows(&mut limit, 3, 5 * MS);
        assert_eq!(limit.current(), 128);
        windows(&mut limit, 1, 40 * MS);
        assert_eq!(limit.current(), 64);
        // Answers as quick as ever again: growth without doubling.
        let seen = windows(&mut limit, 3, 5 * MS);
        assert_eq!(seen, [72, 80, 89], "{seen:?}");
    }

    #[test]
    fn failed_completions_lower_the_limit_to_its_floor_and_no_further() {
        let mut limit = AdaptiveLimit::new(64);
        feed(&mut limit, MIN_WINDOW, 5 * MS, 16);
        assert_eq!(limit.current(), 32);
        limit.failed(32);
        feed(&mut limit, 15, 5 * MS, 32);
        assert_eq!(
            limit.current(),
            28,
            "a tenth off for a window with a failure"
        );
        for _ in 0..400 {
            limit.failed(1);
        }
        assert_eq!(limit.current(), MIN_LIMIT);
    }

    #[test]
    fn a_ceiling_below_the_start_is_the_start_and_the_floor() {
        let mut limit = AdaptiveLimit::new(3);
        assert_eq!(limit.current(), 3);
        for _ in 0..50 {
            limit.failed(3);
        }
        assert_eq!(limit.current(), 3);
    }

    #[test]
    fn an_engine_that_became_slower_for_good_becomes_the_usual_and_the_limit_grows_back() {
        let mut limit = AdaptiveLimit::new(64);
        windows(&mut limit, 2, 5 * MS);
        assert_eq!(limit.current(), 64);
        let seen = windows(&mut limit, 60, 50 * MS);
        let lowest = *seen.iter().min().unwrap();
        assert!(lowest <= 16, "it came down: {seen:?}");
        assert_eq!(*seen.last().unwrap(), 64, "and grew back: {seen:?}");
    }
}
