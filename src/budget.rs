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

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{Mutex, Notify};

use crate::metrics::Metrics;

/// The default of `--retry-budget`, in requests per second.
pub const DEFAULT_RETRY_BUDGET: u32 = 20;

/// Governor's clock on tokio's time: the budget waits on tokio's timer, so that the rules of
/// its spending run in unit tests under a paused clock (governor's own clock is the machine's,
/// which a paused test cannot move).
#[derive(Debug, Clone, Copy, Default)]
struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// A shared rate limit for retries.
#[derive(Debug)]
pub struct RetryBudget {
    limiter: Limiter,
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
            limiter: RateLimiter::direct_with_clock(Quota::per_second(rate), TokioClock),
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
            self.next_token().await;
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
        self.next_token().await;
        metrics.retry_budget_waiting.dec();
        metrics.retry_budget_spent.inc();
    }

    /// Takes the next token that comes free, sleeping until then.
    async fn next_token(&self) {
        while let Err(not_until) = self.limiter.check() {
            tokio::time::sleep(not_until.wait_time_from(TokioClock.now())).await;
        }
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

    /// When each of `n` requests, spent one after the other, got its token (ms from the start).
    async fn spend_times(budget: &RetryBudget, n: usize) -> Vec<u128> {
        let metrics = Metrics::new();
        let start = tokio::time::Instant::now();
        let mut times = Vec::new();
        for _ in 0..n {
            budget.spend(&metrics).await;
            times.push(start.elapsed().as_millis());
        }
        times
    }

    #[tokio::test(start_paused = true)]
    async fn a_seconds_worth_goes_at_once_then_one_request_every_fifth_of_a_second() {
        let budget = RetryBudget::new(5);
        let times = spend_times(&budget, 8).await;
        assert_eq!(times, vec![0, 0, 0, 0, 0, 200, 400, 600]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_budget_refills_to_one_seconds_worth_and_no_more() {
        let budget = RetryBudget::new(5);
        spend_times(&budget, 5).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let times = spend_times(&budget, 6).await;
        assert_eq!(times, vec![0, 0, 0, 0, 0, 200]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_of_zero_still_lets_one_request_a_second_through() {
        let budget = RetryBudget::new(0);
        let times = spend_times(&budget, 3).await;
        assert_eq!(times, vec![0, 1000, 2000]);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_get_their_tokens_in_the_order_they_came() {
        let budget = Arc::new(RetryBudget::new(5));
        let metrics = Arc::new(Metrics::new());
        spend_times(&budget, 5).await;
        let start = tokio::time::Instant::now();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for n in 0..4 {
            let (budget, metrics, order) = (budget.clone(), metrics.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                budget.spend(&metrics).await;
                order.lock().unwrap().push((n, start.elapsed().as_millis()));
            }));
            tokio::task::yield_now().await;
        }
        assert_eq!(metrics.retry_budget_waiting.get(), 4);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order, vec![(0, 200), (1, 400), (2, 600), (3, 800)]);
        assert_eq!(metrics.retry_budget_waiting.get(), 0);
    }
}
