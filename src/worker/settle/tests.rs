//! settle's retries and its decisions after a lost reply, on a scripted engine and a paused clock.

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

    fn confirm(&self, went_through: bool) -> std::future::Ready<LostAttempt> {
        self.confirms.set(self.confirms.get() + 1);
        std::future::ready(if went_through {
            LostAttempt::TookEffect
        } else {
            LostAttempt::DidNot
        })
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

/// The engine's state cannot be read at first (a timeout): the question is asked again after
/// a backoff, never answered "gone" while unknown; unknown until the lock's end, the call
/// counts as failed for the lock, so the engine hands the task out again.
#[tokio::test(start_paused = true)]
async fn a_lost_attempt_whose_outcome_cannot_be_read_is_asked_about_again() {
    let reply = |call| {
        if call == 0 {
            Err(closed())
        } else {
            Err(rejected(404, "External task with id t1 does not exist"))
        }
    };
    let engine = Engine::new(reply);
    let answers = [LostAttempt::Unknown, LostAttempt::TookEffect];
    let asked = Cell::new(0);
    fastrand::seed(SEED);
    let settled = settle(
        "complete",
        MAX_BACKOFF,
        lock_from_now(),
        &CancellationToken::new(),
        || engine.call(),
        || {
            asked.set(asked.get() + 1);
            std::future::ready(answers[asked.get() - 1])
        },
    )
    .await;
    assert_eq!(settled.expect("went through"), Accepted::ReplyLost);
    assert_eq!(asked.get(), 2);
    let d = delays(1);
    assert_eq!(engine.calls(), [Duration::ZERO, Duration::ZERO, d[0]]);

    let engine = Engine::new(reply);
    let settled = settle(
        "complete",
        MAX_BACKOFF,
        lock_from_now(),
        &CancellationToken::new(),
        || engine.call(),
        || std::future::ready(LostAttempt::Unknown),
    )
    .await;
    assert!(
        matches!(settled, Err(Unsettled::LockExpired(_))),
        "{settled:?}"
    );
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
