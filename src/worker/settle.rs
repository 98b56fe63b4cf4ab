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

/// What the engine's state says of an attempt whose reply was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LostAttempt {
    /// It took effect: the task was completed (reported) by this worker.
    TookEffect,
    /// It did not: the task is gone or taken for another reason.
    DidNot,
    /// The state could not be read (an outage, a timeout): the question is asked again after a
    /// backoff, while the lock lasts. Read as "did not", a completion whose marker the engine
    /// holds would wait for a reconciler's pass, minutes away on an idle worker.
    Unknown,
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
/// state whether the lost attempt went through, and asks again later when it cannot tell.
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
    CFut: std::future::Future<Output = LostAttempt>,
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
        let mut undecided = false;
        if reply_lost && (error.is_not_found() || refused) {
            match confirm().await {
                LostAttempt::TookEffect => return Ok(Accepted::ReplyLost),
                LostAttempt::DidNot => debug!("{what}: the lost attempt did not go through"),
                LostAttempt::Unknown => {
                    debug!(
                        "{what}: cannot tell whether the lost attempt went through; asking again"
                    );
                    undecided = true;
                }
            }
        }
        let error = if undecided {
            error
        } else {
            final_error(error)?
        };
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

/// The error of a call that ends the settling (gone, refused, invalid), or the error back when a
/// retry may still get the call through (transient, or the credentials being refreshed).
fn final_error(error: EngineError) -> Result<EngineError, Unsettled> {
    if error.is_not_found() {
        return Err(Unsettled::Gone(error));
    }
    if error.is_transient() || error.is_unauthorized() {
        return Ok(error);
    }
    Err(match error.refusal() {
        Some(Refusal::Call) => Unsettled::Invalid(error),
        Some(Refusal::Lock) | None => Unsettled::Refused(error),
    })
}

#[cfg(test)]
mod tests;
