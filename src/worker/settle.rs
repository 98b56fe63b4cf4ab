//! Reporting a task's result to the engine: the final call (complete, failure, bpmnError) retried
//! while the lock lasts, a lost reply decided from the engine's state, and what a call that did
//! not go through costs (counted, logged once).

use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::engine::{EngineError, Refusal};

/// How a task's final call (complete, failure, bpmnError) went through.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Accepted {
    /// The engine confirmed it (204).
    Confirmed,
    /// The reply was lost, and the engine's state shows the call took effect.
    ReplyLost,
}

/// Why a task's final call did not go through.
#[derive(Debug)]
pub(super) enum Unsettled {
    /// The task no longer exists (404), and nothing shows that this call ended it.
    Gone(EngineError),
    /// The engine refused the call for the lock (another worker holds it, it expired), or with a
    /// status that is not about the task at all.
    Refused(EngineError),
    /// The engine refused the call itself (a 400 not about the lock: a variable it cannot take):
    /// no retry, and no other worker, gets it through as it stands.
    Invalid(EngineError),
    /// Retried while the lock lasted, without success.
    LockExpired(EngineError),
    /// The shutdown grace ended while retrying.
    Abandoned(EngineError),
}

/// Sends a task's final call (complete / failure / bpmnError), retrying transient errors while
/// the lock lasts. When an attempt may have taken effect unseen (its reply was lost) and a
/// retry then finds the task gone (404) or not ours any more (400), `confirm` asks the engine's
/// state whether the lost attempt went through.
pub(super) async fn settle<F, Fut, C, CFut>(
    what: &str,
    max_backoff: Duration,
    lock_until: Instant,
    abort: &CancellationToken,
    call: F,
    confirm: C,
) -> Result<Accepted, Unsettled>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), EngineError>>,
    C: Fn() -> CFut,
    CFut: std::future::Future<Output = bool>,
{
    let mut backoff = Backoff::starting_at(Duration::from_millis(200), max_backoff);
    let mut reply_lost = false;
    let mut retried_at_once = false;
    loop {
        let error = match call().await {
            Ok(()) => return Ok(Accepted::Confirmed),
            Err(error) => error,
        };
        let refused = error.status() == Some(reqwest::StatusCode::BAD_REQUEST);
        reply_lost |= error.outcome_unknown();
        if reply_lost && (error.is_not_found() || refused) {
            if confirm().await {
                return Ok(Accepted::ReplyLost);
            }
            debug!("{what}: the lost attempt did not go through");
        }
        if error.is_not_found() {
            return Err(Unsettled::Gone(error));
        }
        if !(error.is_transient() || error.is_unauthorized()) {
            return Err(match error.refusal() {
                Some(Refusal::Call) => Unsettled::Invalid(error),
                Some(Refusal::Lock) | None => Unsettled::Refused(error),
            });
        }
        if error.retry_at_once() && !retried_at_once {
            // The connection closed under the call: send it again now (a 404 on the repeat
            // is checked against the engine's state above).
            retried_at_once = true;
            continue;
        }
        retried_at_once = false;
        let delay = backoff.next_delay();
        if Instant::now() + delay >= lock_until {
            return Err(Unsettled::LockExpired(error));
        }
        debug!("{what} failed, retrying in {delay:?}: {error}");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = abort.cancelled() => return Err(Unsettled::Abandoned(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use reqwest::StatusCode;

    use super::*;

    const LOCK: Duration = Duration::from_secs(30);
    const MAX_BACKOFF: Duration = Duration::from_secs(4);
    const SEED: u64 = 25;

    /// An engine error body, as the transport decodes it.
    fn rejected(status: u16, message: &str) -> EngineError {
        EngineError::Rejected {
            endpoint: "POST /external-task/t1/complete".into(),
            status: StatusCode::from_u16(status).expect("a status"),
            kind: "RestException".into(),
            message: message.into(),
            code: None,
        }
    }

    /// A transport error made without any I/O (a request that cannot be built).
    fn transport_error() -> reqwest::Error {
        reqwest::Client::new()
            .get("not a url")
            .build()
            .expect_err("no URL")
    }

    /// The connection closed under the call: the reply may be lost.
    fn closed() -> EngineError {
        EngineError::ConnectionClosed {
            endpoint: "POST /external-task/t1/complete".into(),
            source: transport_error(),
        }
    }

    /// No answer, and the request may have gone out (not a refused connection).
    fn unanswered() -> EngineError {
        EngineError::Unreachable {
            endpoint: "POST /external-task/t1/complete".into(),
            source: transport_error(),
        }
    }

    fn lock_refusal() -> EngineError {
        rejected(
            400,
            "External Task t1 cannot be completed by worker 'w-1'. It is locked by worker 'other'.",
        )
    }

    /// The engine's replies, by call number, and when (since the start) each call was sent.
    struct Engine<R> {
        reply: R,
        start: Instant,
        calls: RefCell<Vec<Duration>>,
        confirms: Cell<u32>,
    }

    impl<R: Fn(usize) -> Result<(), EngineError>> Engine<R> {
        fn new(reply: R) -> Self {
            Engine {
                reply,
                start: Instant::now(),
                calls: RefCell::new(Vec::new()),
                confirms: Cell::new(0),
            }
        }

        fn call(&self) -> std::future::Ready<Result<(), EngineError>> {
            let mut calls = self.calls.borrow_mut();
            calls.push(self.start.elapsed());
            std::future::ready((self.reply)(calls.len() - 1))
        }

        fn confirm(&self, went_through: bool) -> std::future::Ready<bool> {
            self.confirms.set(self.confirms.get() + 1);
            std::future::ready(went_through)
        }

        /// Settles against this engine, the lost attempt confirmed or not.
        async fn settle(
            &self,
            lock_until: Instant,
            abort: &CancellationToken,
            went_through: bool,
        ) -> Result<Accepted, Unsettled> {
            fastrand::seed(SEED);
            settle(
                "complete",
                MAX_BACKOFF,
                lock_until,
                abort,
                || self.call(),
                || self.confirm(went_through),
            )
            .await
        }

        fn calls(&self) -> Vec<Duration> {
            self.calls.borrow().clone()
        }
    }

    /// The backoff delays settle draws under [`SEED`], as drawn.
    fn drawn(count: usize) -> Vec<Duration> {
        fastrand::seed(SEED);
        let mut backoff = Backoff::starting_at(Duration::from_millis(200), MAX_BACKOFF);
        (0..count).map(|_| backoff.next_delay()).collect()
    }

    /// The backoff delays settle waits under [`SEED`]: tokio's timer wakes on the millisecond
    /// after a deadline, so each sleep lasts its delay rounded up to a whole millisecond.
    fn delays(count: usize) -> Vec<Duration> {
        drawn(count).into_iter().map(whole_millis).collect()
    }

    fn whole_millis(delay: Duration) -> Duration {
        let millis = delay.as_nanos().div_ceil(1_000_000);
        Duration::from_millis(u64::try_from(millis).expect("a short delay"))
    }

    fn lock_from_now() -> Instant {
        Instant::now() + LOCK
    }

    #[tokio::test(start_paused = true)]
    async fn a_confirmed_call_is_sent_once() {
        let engine = Engine::new(|_| Ok(()));
        let settled = engine
            .settle(lock_from_now(), &CancellationToken::new(), true)
            .await;
        assert_eq!(settled.expect("confirmed"), Accepted::Confirmed);
        assert_eq!(engine.calls(), [Duration::ZERO]);
        assert_eq!(engine.confirms.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn server_errors_are_retried_after_growing_delays_until_the_call_goes_through() {
        let engine = Engine::new(|call| match call {
            0 => Err(rejected(500, "optimistic locking")),
            1 => Err(rejected(503, "")),
            _ => Ok(()),
        });
        let settled = engine
            .settle(lock_from_now(), &CancellationToken::new(), true)
            .await;
        assert_eq!(settled.expect("confirmed"), Accepted::Confirmed);
        let d = delays(2);
        assert_eq!(engine.calls(), [Duration::ZERO, d[0], d[0] + d[1]]);
        assert_eq!(
            engine.confirms.get(),
            0,
            "an error body is certain: no check"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retrying_stops_when_the_next_delay_would_reach_the_end_of_the_lock() {
        let lock = Duration::from_secs(5);
        let engine = Engine::new(|_| Err(rejected(500, "")));
        let started = Instant::now();
        let settled = engine
            .settle(started + lock, &CancellationToken::new(), true)
            .await;
        assert!(
            matches!(settled, Err(Unsettled::LockExpired(_))),
            "{settled:?}"
        );
        let mut expected = vec![Duration::ZERO];
        let mut at = Duration::ZERO;
        for delay in drawn(64) {
            if at + delay >= lock {
                break;
            }
            at += whole_millis(delay);
            expected.push(at);
        }
        assert_eq!(engine.calls(), expected);
        assert_eq!(
            started.elapsed(),
            at,
            "given up at once, without a last sleep"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_connection_is_sent_again_at_once_and_a_second_close_backs_off() {
        let engine = Engine::new(|call| if call < 3 { Err(closed()) } else { Ok(()) });
        let settled = engine
            .settle(lock_from_now(), &CancellationToken::new(), true)
            .await;
        assert_eq!(settled.expect("confirmed"), Accepted::Confirmed);
        let d = delays(1);
        assert_eq!(engine.calls(), [Duration::ZERO, Duration::ZERO, d[0], d[0]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_404_after_a_lost_reply_is_decided_by_the_engine_state() {
        let reply = |call| {
            if call == 0 {
                Err(closed())
            } else {
                Err(rejected(404, "External task with id t1 does not exist"))
            }
        };
        let engine = Engine::new(reply);
        let settled = engine
            .settle(lock_from_now(), &CancellationToken::new(), true)
            .await;
        assert_eq!(settled.expect("went through"), Accepted::ReplyLost);
        assert_eq!(engine.calls(), [Duration::ZERO, Duration::ZERO]);
        assert_eq!(engine.confirms.get(), 1);

        let engine = Engine::new(reply);
        let settled = engine
            .settle(lock_from_now(), &CancellationToken::new(), false)
            .await;
        assert!(matches!(settled, Err(Unsettled::Gone(_))), "{settled:?}");
        assert_eq!(engine.confirms.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_404_without_a_lost_reply_is_gone_without_asking_the_engine() {
        let engine = Engine::new(|_| Err(rejected(404, "External task with id t1 does not exist")));
        let settled = engine
            .settle(lock_from_now(), &CancellationToken::new(), true)
            .await;
        assert!(matches!(settled, Err(Unsettled::Gone(_))), "{settled:?}");
        assert_eq!(engine.calls(), [Duration::ZERO]);
        assert_eq!(engine.confirms.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lock_refusal_after_an_unanswered_attempt_is_decided_by_the_engine_state() {
        let reply = |call| {
            if call == 0 {
                Err(unanswered())
            } else {
                Err(lock_refusal())
            }
        };
        let engine = Engine::new(reply);
        let settled = engine
            .settle(lock_from_now(), &CancellationToken::new(), true)
            .await;
        assert_eq!(settled.expect("went through"), Accepted::ReplyLost);
        let d = delays(1);
        assert_eq!(
            engine.calls(),
            [Duration::ZERO, d[0]],
            "backed off, not resent"
        );

        let engine = Engine::new(reply);
        let settled = engine
            .settle(lock_from_now(), &CancellationToken::new(), false)
            .await;
        assert!(matches!(settled, Err(Unsettled::Refused(_))), "{settled:?}");
        assert_eq!(engine.confirms.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_final_and_says_whether_it_is_about_the_lock_or_the_call() {
        let engine = Engine::new(|_| Err(lock_refusal()));
        let settled = engine
            .settle(lock_from_now(), &CancellationToken::new(), true)
            .await;
        assert!(matches!(settled, Err(Unsettled::Refused(_))), "{settled:?}");
        assert_eq!(engine.calls(), [Duration::ZERO]);

        let engine = Engine::new(|_| {
            Err(rejected(
                400,
                "Cannot deserialize object in variable 'doc': SPIN/JACKSON-JSON-01004",
            ))
        });
        let settled = engine
            .settle(lock_from_now(), &CancellationToken::new(), true)
            .await;
        assert!(matches!(settled, Err(Unsettled::Invalid(_))), "{settled:?}");
        assert_eq!(engine.calls(), [Duration::ZERO]);
        assert_eq!(engine.confirms.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn refused_credentials_are_retried_like_an_outage() {
        let engine = Engine::new(|call| {
            if call == 0 {
                Err(EngineError::Unauthorized {
                    endpoint: "POST /external-task/t1/complete".into(),
                    status: StatusCode::UNAUTHORIZED,
                    user: None,
                })
            } else {
                Ok(())
            }
        });
        let settled = engine
            .settle(lock_from_now(), &CancellationToken::new(), true)
            .await;
        assert_eq!(settled.expect("confirmed"), Accepted::Confirmed);
        assert_eq!(engine.calls(), [Duration::ZERO, delays(1)[0]]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_abort_token_ends_the_wait_between_retries() {
        let abort = CancellationToken::new();
        let cancel = abort.clone();
        tokio::spawn(async move {
            // Before the first delay ends: no delay is shorter than half the first step (100 ms).
            tokio::time::sleep(Duration::from_millis(50)).await;
            cancel.cancel();
        });
        let engine = Engine::new(|_| Err(rejected(500, "")));
        let started = Instant::now();
        let settled = engine.settle(lock_from_now(), &abort, true).await;
        assert!(
            matches!(settled, Err(Unsettled::Abandoned(_))),
            "{settled:?}"
        );
        assert_eq!(engine.calls(), [Duration::ZERO]);
        assert_eq!(started.elapsed(), Duration::from_millis(50));
    }
}
