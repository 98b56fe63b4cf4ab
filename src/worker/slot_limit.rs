//! The adaptive limit ([`super::concurrency`]) applied to the task slots: the slots above the limit
//! are kept here instead of in the semaphore the polls take from, and a slot a task gives up goes
//! back to the polls only while fewer tasks are in flight than the limit allows.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::debug;

use super::concurrency::AdaptiveLimit;
use crate::engine::EngineError;
use crate::metrics::Metrics;

/// One task's slot: given back when dropped, unless the limit came down meanwhile and keeps it.
pub(crate) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    limit: Arc<SlotLimit>,
}

impl Slot {
    pub(crate) fn new(permit: OwnedSemaphorePermit, limit: Arc<SlotLimit>) -> Self {
        Slot {
            permit: Some(permit),
            limit,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.limit.give_back(permit);
        }
    }
}

/// The adaptive limit applied to the slots: the slots above it are kept here, not in the
/// semaphore the polls take from. Without an adaptive limit (`--concurrency fixed`) none are.
pub(crate) struct SlotLimit {
    slots: Arc<Semaphore>,
    max_tasks: usize,
    /// Whether a limit moves at all; a fixed one never keeps a slot, so its tasks give their
    /// slots back without taking the lock.
    adaptive: bool,
    state: Mutex<LimitState>,
}

struct LimitState {
    adaptive: Option<AdaptiveLimit>,
    kept: Vec<OwnedSemaphorePermit>,
}

impl LimitState {
    fn limit(&self, max_tasks: usize) -> usize {
        self.adaptive
            .as_ref()
            .map_or(max_tasks, AdaptiveLimit::current)
    }
}

impl SlotLimit {
    pub(crate) fn new(slots: Arc<Semaphore>, max_tasks: usize, adaptive: bool) -> Self {
        let limit = SlotLimit {
            slots,
            max_tasks,
            adaptive,
            state: Mutex::new(LimitState {
                adaptive: adaptive.then(|| AdaptiveLimit::new(max_tasks)),
                kept: Vec::new(),
            }),
        };
        limit.settle(&mut limit.state());
        limit
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LimitState> {
        // Each change leaves the state whole: a panic elsewhere cannot tear it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many tasks may be in flight now.
    pub(crate) fn current(&self) -> usize {
        self.state().limit(self.max_tasks)
    }

    /// A task's completion got its answer after `round_trip`.
    pub(crate) fn answered(&self, round_trip: Duration, metrics: &Metrics) {
        self.sample(metrics, |adaptive, in_flight| {
            adaptive.answered(round_trip, in_flight)
        });
    }

    /// A task's completion failed on the way (no answer, or the engine's 5xx).
    pub(crate) fn failed(&self, metrics: &Metrics) {
        self.sample(metrics, AdaptiveLimit::failed);
    }

    /// Runs one `complete` call and reports it: an answer of the engine (any status below 500)
    /// with its round trip, or a failure on the way (no answer, a 5xx).
    pub(crate) async fn timed(
        &self,
        metrics: &Metrics,
        call: impl std::future::Future<Output = Result<(), EngineError>>,
    ) -> Result<(), EngineError> {
        let sent = Instant::now();
        let result = call.await;
        match &result {
            Ok(()) => self.answered(sent.elapsed(), metrics),
            Err(e) if e.status().is_some_and(|status| !status.is_server_error()) => {
                self.answered(sent.elapsed(), metrics);
            }
            Err(_) => self.failed(metrics),
        }
        result
    }

    fn sample(
        &self,
        metrics: &Metrics,
        moved: impl FnOnce(&mut AdaptiveLimit, usize) -> Option<usize>,
    ) {
        let mut state = self.state();
        let in_flight = self
            .max_tasks
            .saturating_sub(self.slots.available_permits() + state.kept.len());
        let Some(adaptive) = state.adaptive.as_mut() else {
            return;
        };
        if let Some(limit) = moved(adaptive, in_flight) {
            debug!(limit, in_flight, "concurrency limit moved");
            metrics.concurrency_limit.set(limit as i64);
            self.settle(&mut state);
        }
    }

    /// Keeps as many slots back as the limit is below `--max-tasks`: gives back what is kept above
    /// that, and takes what is free below it (the rest comes back as tasks end, see `give_back`).
    fn settle(&self, state: &mut LimitState) {
        let keep = self.max_tasks - state.limit(self.max_tasks);
        state.kept.truncate(keep);
        while state.kept.len() < keep {
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(permit) => state.kept.push(permit),
                Err(_) => break,
            }
        }
    }

    /// A task ended: its slot goes back to the polls, or is kept while the limit is lower than
    /// the tasks in flight.
    fn give_back(&self, permit: OwnedSemaphorePermit) {
        if !self.adaptive {
            return; // dropping the permit gives it back to the polls
        }
        let mut state = self.state();
        if state.kept.len() < self.max_tasks - state.limit(self.max_tasks) {
            state.kept.push(permit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::concurrency::{INITIAL_LIMIT, MIN_WINDOW};
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// `max` slots under an adaptive limit, and `taken` of them held by tasks.
    fn slots(max: usize, taken: usize) -> (Arc<Semaphore>, Arc<SlotLimit>, Vec<Slot>) {
        let semaphore = Arc::new(Semaphore::new(max));
        let limit = Arc::new(SlotLimit::new(Arc::clone(&semaphore), max, true));
        let held = (0..taken)
            .map(|_| {
                let permit = Arc::clone(&semaphore).try_acquire_owned().expect("free");
                Slot::new(permit, Arc::clone(&limit))
            })
            .collect();
        (semaphore, limit, held)
    }

    #[test]
    fn only_the_limit_s_slots_can_be_taken_and_a_raised_limit_frees_more() {
        let metrics = Metrics::new();
        let (semaphore, limit, mut held) = slots(64, 0);
        assert_eq!(
            semaphore.available_permits(),
            INITIAL_LIMIT,
            "the rest kept back"
        );
        for _ in 0..INITIAL_LIMIT {
            let permit = Arc::clone(&semaphore).try_acquire_owned().expect("free");
            held.push(Slot::new(permit, Arc::clone(&limit)));
        }
        for _ in 0..MIN_WINDOW {
            limit.answered(5 * MS, &metrics);
        }
        assert_eq!(limit.current(), 32);
        assert_eq!(metrics.concurrency_limit.get(), 32);
        assert_eq!(semaphore.available_permits(), 16, "raised: 16 more free");
    }

    #[test]
    fn a_lowered_limit_keeps_the_slots_tasks_give_back_until_in_flight_is_under_it() {
        let metrics = Metrics::new();
        let (semaphore, limit, mut held) = slots(64, 16);
        for _ in 0..MIN_WINDOW {
            limit.answered(5 * MS, &metrics);
        }
        let mut more: Vec<Slot> = (0..16)
            .map(|_| {
                let permit = Arc::clone(&semaphore).try_acquire_owned().expect("free");
                Slot::new(permit, Arc::clone(&limit))
            })
            .collect();
        held.append(&mut more);
        assert_eq!((limit.current(), semaphore.available_permits()), (32, 0));
        // Four times as slow: the limit halves while all 32 are still in flight.
        for _ in 0..16 {
            limit.answered(20 * MS, &metrics);
        }
        assert_eq!(limit.current(), 16);
        held.truncate(20);
        assert_eq!(
            semaphore.available_permits(),
            0,
            "12 ended, 20 still over 16"
        );
        held.truncate(10);
        assert_eq!(
            semaphore.available_permits(),
            6,
            "10 in flight: 6 more may start"
        );
    }

    #[test]
    fn a_fixed_limit_never_keeps_a_slot() {
        let metrics = Metrics::new();
        let semaphore = Arc::new(Semaphore::new(8));
        let limit = Arc::new(SlotLimit::new(Arc::clone(&semaphore), 8, false));
        assert_eq!((limit.current(), semaphore.available_permits()), (8, 8));
        for _ in 0..100 {
            limit.failed(&metrics);
        }
        assert_eq!((limit.current(), semaphore.available_permits()), (8, 8));
    }
}
