//! The pace of one node's poll loop: how many slots the next poll may take, and what the loop
//! waits after each poll — nothing after tasks, the rest of the minimum poll pause after an empty
//! poll, a growing backoff after an error ([`Pace`]).
//!
//! The minimum poll pause (`--min-poll-interval`): a poll that comes back empty sooner than the
//! pause waits out the rest before the next one.
//!
//! Why: a long poll normally paces itself — the engine parks it until a task comes or the long
//! poll ends. But `--long-poll 0s`, a proxy that ends parked requests at once, or an engine that
//! answers `[]` without parking turn the loop into a busy one (37 fetches a second were measured
//! against such an engine), which costs the engine a query each. Replies with tasks are never
//! paced: more may be waiting, and the slots decide how fast those are fetched.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

/// What one poll did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// Tasks were fetched and started.
    Fetched {
        /// How many.
        tasks: usize,
        /// Whether the engine filled every slot the fetch asked for (more may be waiting).
        saturated: bool,
    },
    /// The long poll ended without a task.
    Empty,
    /// Shutdown began; nothing more is fetched from this node.
    Stopped,
}

/// What the poll loop waits before its next poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Tasks came: poll again at once (more may be waiting; the slots set the pace).
    Nothing,
    /// The poll came back empty: not before the minimum poll pause since it began.
    Pause {
        /// When the empty poll began.
        polled_at: Instant,
    },
    /// The poll failed: back off this long.
    BackOff(Duration),
}

/// The pace of one node's poll loop (see the module header).
#[derive(Debug)]
pub(crate) struct Pace {
    backoff: Backoff,
    min_interval: Duration,
    /// How the last poll ended, `None` after an error (or before the first poll).
    last: Option<PollOutcome>,
}

impl Pace {
    /// A loop that pauses `min_interval` after an empty poll and backs off up to `max_backoff`.
    pub(crate) fn new(min_interval: Duration, max_backoff: Duration) -> Self {
        Pace {
            backoff: Backoff::new(max_backoff),
            min_interval,
            last: None,
        }
    }

    /// How many free slots the next poll may take. Alone, a node's poll takes every free slot;
    /// among several, a node that just handed out tasks takes all free slots again, an idle one
    /// parks with a single slot.
    pub(crate) fn share(&self, alone: bool) -> usize {
        if alone || matches!(self.last, Some(PollOutcome::Fetched { .. })) {
            usize::MAX
        } else {
            1
        }
    }

    /// Whether this node's last poll filled every slot it asked for (more tasks may wait).
    pub(crate) fn saturated(&self) -> bool {
        matches!(
            self.last,
            Some(PollOutcome::Fetched {
                saturated: true,
                ..
            })
        )
    }

    /// After a poll that began at `polled_at` and ended with `outcome`: a success starts the
    /// backoff over.
    pub(crate) fn after_poll(&mut self, polled_at: Instant, outcome: PollOutcome) -> Wait {
        self.last = Some(outcome);
        self.backoff.reset();
        if outcome == PollOutcome::Empty {
            Wait::Pause { polled_at }
        } else {
            Wait::Nothing
        }
    }

    /// After a poll that failed: the next, longer, backoff delay.
    pub(crate) fn after_error(&mut self) -> Duration {
        self.last = None;
        self.backoff.next_delay()
    }

    /// Waits what `wait` says. Returns `false` when one of `stops` was cancelled first.
    pub(crate) async fn wait(&self, wait: Wait, stops: [&CancellationToken; 2]) -> bool {
        match wait {
            Wait::Nothing => true,
            Wait::Pause { polled_at } => {
                pause_after_empty(polled_at, self.min_interval, stops).await
            }
            Wait::BackOff(delay) => {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => true,
                    _ = stops[0].cancelled() => false,
                    _ = stops[1].cancelled() => false,
                }
            }
        }
    }
}

/// After an empty poll that began at `polled_at`, waits until `min_interval` has passed since
/// then. Returns `false` when one of `stops` was cancelled first.
pub(crate) async fn pause_after_empty(
    polled_at: Instant,
    min_interval: Duration,
    stops: [&CancellationToken; 2],
) -> bool {
    let until = polled_at + min_interval;
    if Instant::now() >= until {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep_until(until) => true,
        _ = stops[0].cancelled() => false,
        _ = stops[1].cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_empty_poll_that_came_back_early_waits_out_the_rest_of_the_pause() {
        let (a, b) = (CancellationToken::new(), CancellationToken::new());
        let polled_at = Instant::now();
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(pause_after_empty(polled_at, Duration::from_secs(1), [&a, &b]).await);
        assert_eq!(polled_at.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_poll_that_took_longer_than_the_pause_goes_on_at_once() {
        let (a, b) = (CancellationToken::new(), CancellationToken::new());
        let polled_at = Instant::now();
        tokio::time::advance(Duration::from_secs(45)).await;
        let resumed = Instant::now();
        assert!(pause_after_empty(polled_at, Duration::from_secs(1), [&a, &b]).await);
        assert_eq!(resumed.elapsed(), Duration::ZERO);
        assert!(pause_after_empty(resumed, Duration::ZERO, [&a, &b]).await);
    }

    const MIN: Duration = Duration::from_millis(500);
    const MAX_BACKOFF: Duration = Duration::from_secs(8);
    const SEED: u64 = 25;

    fn fetched(tasks: usize, saturated: bool) -> PollOutcome {
        PollOutcome::Fetched { tasks, saturated }
    }

    /// How long tokio's timer sleeps a delay: rounded up to a whole millisecond.
    fn slept(delay: Duration) -> Duration {
        let millis = delay.as_nanos().div_ceil(1_000_000);
        Duration::from_millis(u64::try_from(millis).expect("a short delay"))
    }

    /// Runs the loop's pace over scripted polls (how long each takes, and how it ends); returns
    /// when (since the start) each poll began.
    async fn poll_times(script: &[(Duration, Result<PollOutcome, ()>)]) -> Vec<Duration> {
        let (a, b) = (CancellationToken::new(), CancellationToken::new());
        // Seeded before the backoff is built: building one draws from the same generator.
        fastrand::seed(SEED);
        let mut pace = Pace::new(MIN, MAX_BACKOFF);
        let start = Instant::now();
        let mut began = Vec::new();
        for (takes, result) in script {
            let polled_at = Instant::now();
            began.push(start.elapsed());
            tokio::time::advance(*takes).await;
            let wait = match result {
                Ok(outcome) => pace.after_poll(polled_at, *outcome),
                Err(()) => Wait::BackOff(pace.after_error()),
            };
            assert!(pace.wait(wait, [&a, &b]).await);
        }
        began
    }

    #[tokio::test(start_paused = true)]
    async fn errors_back_off_longer_each_time_and_a_success_starts_the_backoff_over() {
        let ms = Duration::from_millis;
        let began = poll_times(&[
            (ms(10), Err(())),
            (ms(10), Err(())),
            (ms(10), Err(())),
            (ms(10), Ok(fetched(1, false))),
            (ms(10), Err(())),
            (ms(10), Ok(fetched(1, false))),
        ])
        .await;
        // The same draws, from a backoff built and reset where the loop's is.
        fastrand::seed(SEED);
        let mut backoff = Backoff::new(MAX_BACKOFF);
        let d: Vec<_> = (0..3).map(|_| slept(backoff.next_delay())).collect();
        backoff.reset();
        let first = slept(backoff.next_delay());
        let mut expected = vec![Duration::ZERO];
        let mut at = Duration::ZERO;
        for step in [d[0], d[1], d[2], Duration::ZERO, first] {
            at += ms(10) + step;
            expected.push(at);
        }
        assert_eq!(began, expected);
        // Each step doubles (0.5 s, 1 s, 2 s, drawn from the upper half), and the one after a
        // success is a first step again.
        assert!(
            d[0] <= ms(500) && d[1] >= ms(500) && d[2] >= ms(1000),
            "{d:?}"
        );
        assert!(first <= ms(500), "{first:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn empty_polls_are_paced_and_polls_with_tasks_are_not() {
        let ms = Duration::from_millis;
        let began = poll_times(&[
            (ms(100), Ok(PollOutcome::Empty)),
            (ms(700), Ok(PollOutcome::Empty)),
            (ms(0), Ok(fetched(3, true))),
            (ms(50), Ok(fetched(1, false))),
            (ms(20), Ok(PollOutcome::Empty)),
        ])
        .await;
        // 0 → 500 (paused to the minimum), 500 → 1200 (took longer), then no pause after tasks.
        assert_eq!(began, [ms(0), ms(500), ms(1200), ms(1200), ms(1250)]);
    }

    #[test]
    fn a_node_that_just_handed_out_tasks_takes_every_free_slot_an_idle_one_takes_one() {
        let mut pace = Pace::new(MIN, MAX_BACKOFF);
        let now = Instant::now();
        assert_eq!((pace.share(true), pace.share(false)), (usize::MAX, 1));
        assert!(!pace.saturated());
        pace.after_poll(now, fetched(4, true));
        assert_eq!(pace.share(false), usize::MAX);
        assert!(pace.saturated());
        pace.after_poll(now, fetched(2, false));
        assert_eq!(pace.share(false), usize::MAX);
        assert!(!pace.saturated());
        pace.after_poll(now, PollOutcome::Empty);
        assert_eq!(pace.share(false), 1);
        pace.after_poll(now, fetched(4, true));
        pace.after_error();
        assert_eq!((pace.share(false), pace.saturated()), (1, false));
        assert_eq!(pace.share(true), usize::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_a_backoff() {
        let (a, b) = (CancellationToken::new(), CancellationToken::new());
        let pace = Pace::new(MIN, MAX_BACKOFF);
        let stop = a.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(40)).await;
            stop.cancel();
        });
        let started = Instant::now();
        assert!(
            !pace
                .wait(Wait::BackOff(Duration::from_secs(8)), [&a, &b])
                .await
        );
        assert_eq!(started.elapsed(), Duration::from_millis(40));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_pause() {
        let (a, b) = (CancellationToken::new(), CancellationToken::new());
        b.cancel();
        let polled_at = Instant::now();
        assert!(!pause_after_empty(polled_at, Duration::from_secs(60), [&a, &b]).await);
        assert_eq!(polled_at.elapsed(), Duration::ZERO);
    }
}
