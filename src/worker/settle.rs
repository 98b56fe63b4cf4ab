//! Reporting a task's result to the engine: the final call (complete, failure, bpmnError) retried
//! while the lock lasts, a lost reply decided from the engine's state, and what a call that did
//! not go through costs (counted, logged once).

use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::engine::EngineError;

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
    /// The engine refused the call (400: another worker holds the lock, ...).
    Refused(EngineError),
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
            return Err(Unsettled::Refused(error));
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

/// Whether a 400 on `complete` is about something other than the lock (which another worker
/// holds, or which expired): then no retry and no other worker can complete the task as it is.
pub(super) fn refusal_is_not_about_the_lock(error: &EngineError) -> bool {
    let EngineError::Rejected {
        status, message, ..
    } = error
    else {
        return false;
    };
    *status == reqwest::StatusCode::BAD_REQUEST
        && !message.contains("is locked by")
        && !message.contains("cannot be completed by worker")
        && !message.contains("lock")
}
