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

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_pause() {
        let (a, b) = (CancellationToken::new(), CancellationToken::new());
        b.cancel();
        let polled_at = Instant::now();
        assert!(!pause_after_empty(polled_at, Duration::from_secs(60), [&a, &b]).await);
        assert_eq!(polled_at.elapsed(), Duration::ZERO);
    }
}
