//! The retry budget: a worker-wide bound on the engine requests that are not first attempts.
//!
//! A follow-up's first message (and the one marker read that decides a mismatch) goes out at
//! once; those are paid for by the task that was completed, so they grow with the work and no
//! further. Everything else — retries of messages that find no wait, retries after engine errors,
//! the reconciler's recoveries, incidents, the diagnosis of a wrong message name — waits for a
//! token of this budget (`--retry-budget`, 20 requests/s by default). So a misspelled
//! `--message-name` or a process that never reaches its catch event costs the engine at most that
//! many requests a second per worker, however many follow-ups are pending.
//!
//! Waiters are served in order (a fair mutex in front of the rate limiter), so no follow-up
//! starves behind newer ones. The diagnosis of a misconfigured route is the exception
//! ([`RetryBudget::spend_first`]): it is one request per route at a time, and behind thousands of
//! retries it would come minutes late, when an operator needs it at once.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use tokio::sync::{Mutex, Notify};

use crate::metrics::Metrics;

/// The default of `--retry-budget`, in requests per second.
pub const DEFAULT_RETRY_BUDGET: u32 = 20;

/// A shared rate limit for retries.
#[derive(Debug)]
pub struct RetryBudget {
    limiter: DefaultDirectRateLimiter,
    queue: Mutex<()>,
    /// Requests waiting ahead of the queue ([`RetryBudget::spend_first`]): while there are any,
    /// the queue's head does not ask the limiter.
    ahead: AtomicUsize,
    /// Told when a request ahead of the queue is done.
    ahead_done: Notify,
}

/// A request ahead of the queue; dropped (spent, or given up), it lets the queue go on.
struct Ahead<'a>(&'a RetryBudget);

impl Drop for Ahead<'_> {
    fn drop(&mut self) {
        self.0.ahead.fetch_sub(1, Ordering::SeqCst);
        self.0.ahead_done.notify_waiters();
    }
}

impl RetryBudget {
    /// A budget of `per_second` requests a second (at least one), without bursts beyond one
    /// second's worth.
    pub fn new(per_second: u32) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        RetryBudget {
            limiter: DefaultDirectRateLimiter::direct(Quota::per_second(rate)),
            queue: Mutex::new(()),
            ahead: AtomicUsize::new(0),
            ahead_done: Notify::new(),
        }
    }

    /// Waits for one request's worth of budget, in turn with the other waiters.
    pub async fn spend(&self, metrics: &Metrics) {
        metrics.retry_budget_waiting.inc();
        {
            let _turn = self.queue.lock().await;
            loop {
                // Made before the look, so that a request done in between still wakes us.
                let done = self.ahead_done.notified();
                if self.ahead.load(Ordering::SeqCst) == 0 {
                    break;
                }
                done.await;
            }
            self.limiter.until_ready().await;
        }
        metrics.retry_budget_waiting.dec();
        metrics.retry_budget_spent.inc();
    }

    /// Waits for one request's worth of budget ahead of the queue: the next token that comes
    /// free, unless the queue's head was already waiting for it (then the one after). The rate
    /// stays the same; only the order changes. For rare requests whose lateness costs more than a
    /// retry's.
    pub async fn spend_first(&self, metrics: &Metrics) {
        metrics.retry_budget_waiting.inc();
        self.ahead.fetch_add(1, Ordering::SeqCst);
        let _ahead = Ahead(self);
        let clock = DefaultClock::default();
        while let Err(not_until) = self.limiter.check() {
            tokio::time::sleep(not_until.wait_time_from(clock.now())).await;
        }
        metrics.retry_budget_waiting.dec();
        metrics.retry_budget_spent.inc();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_budget_lets_its_rate_through_and_makes_the_rest_wait() {
        let budget = Arc::new(RetryBudget::new(5));
        let metrics = Arc::new(Metrics::new());
        let spent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = std::time::Instant::now();
        for _ in 0..50 {
            let (budget, metrics, spent) = (budget.clone(), metrics.clone(), spent.clone());
            tokio::spawn(async move {
                budget.spend(&metrics).await;
                spent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let so_far = spent.load(std::sync::atomic::Ordering::SeqCst);
        // The bound follows the time that really passed, however slow the machine.
        let allowed = 5 + (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
        assert!(
            (5..=allowed).contains(&so_far),
            "one second's burst, then the rate: {so_far} of 50 (at most {allowed})"
        );
        assert!(metrics.retry_budget_waiting.get() >= i64::try_from(50 - allowed).unwrap());
    }

    #[tokio::test]
    async fn a_request_that_goes_first_passes_a_queue_of_waiters_within_the_rate() {
        let budget = Arc::new(RetryBudget::new(2));
        let metrics = Arc::new(Metrics::new());
        // Spend the burst, then queue 20 waiters: in turn they would take ten seconds.
        for _ in 0..2 {
            budget.spend(&metrics).await;
        }
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..20 {
            let (budget, metrics, queued) = (budget.clone(), metrics.clone(), queued.clone());
            tokio::spawn(async move {
                budget.spend(&metrics).await;
                queued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        tokio::task::yield_now().await;
        budget.spend_first(&metrics).await;
        // Judged by state: the queue's head, already waiting, may win the next token, no other.
        let before = queued.load(std::sync::atomic::Ordering::SeqCst);
        assert!(before <= 1, "{before} of 20 queued waiters went first");
        assert_eq!(metrics.retry_budget_spent.get(), 2 + 1 + before as u64);
    }
}
