//! What the engine's refusals are about, read from its English text: the one place that reads it.
//!
//! The engine says why it refused a call only in its exception message. Callers branch on a typed
//! kind instead: a message correlation that matched no instance or several ([`Mismatch`]), a call
//! on a locked task refused for the lock or for the call itself ([`Refusal`]). Matching is on the
//! exception's simple name and the engine's English message, never on the Java package, so
//! Camunda, Operaton and CIB seven read alike.

use reqwest::StatusCode;

use super::error::EngineError;

/// Why a message correlation was refused with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// No instance waits for the message (yet): it has not reached the catch event, or it has
    /// already moved on.
    NoMatch,
    /// Several instances wait for the message under the same business key.
    MultipleMatches,
}

/// What a 400 to a call on a locked task (complete, failure, bpmnError, extendLock) is about.
/// The engine says it only in English text; this is the one place that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The lock: another worker holds it ("… cannot be completed by worker 'A'. It is locked by
    /// worker 'B'."), or it expired ("Cannot extend a lock that expired"). The task is someone
    /// else's now, or will be handed out again.
    Lock,
    /// Something in the call itself (a variable the engine cannot deserialize, say): it would be
    /// refused again on every retry and to every worker, as the call stands.
    Call,
}

impl EngineError {
    /// Classifies a 400 to a call on a locked task; `None` for every other error. A refusal of a
    /// call sent again after its connection broke is not classified ([`EngineError::Resent`]):
    /// the first attempt may have gone through, and the refusal may be about that.
    pub fn refusal(&self) -> Option<Refusal> {
        let EngineError::Rejected {
            status, message, ..
        } = self
        else {
            return None;
        };
        if *status != StatusCode::BAD_REQUEST {
            return None;
        }
        // Any mention of the lock counts: the engine's wording of a lock refusal varies by call
        // and version ("is locked by", "cannot be completed by worker", "a lock that expired").
        let about_the_lock = message.contains("is locked by")
            || message.contains("cannot be completed by worker")
            || message.contains("lock");
        Some(if about_the_lock {
            Refusal::Lock
        } else {
            Refusal::Call
        })
    }

    /// Classifies a refused message correlation; `None` for every other error.
    pub fn mismatch(&self) -> Option<Mismatch> {
        if let EngineError::Resent(inner) = self {
            return inner.mismatch();
        }
        let EngineError::Rejected {
            status, message, ..
        } = self
        else {
            return None;
        };
        if *status != StatusCode::BAD_REQUEST
            || !message.contains("MismatchingMessageCorrelationException")
        {
            return None;
        }
        if message.contains("No process definition or execution matches") {
            Some(Mismatch::NoMatch)
        } else if message.contains("executions match") || message.contains("to a single execution")
        {
            Some(Mismatch::MultipleMatches)
        } else {
            // An unknown variant of the mismatch: treat like "not there yet", which retries for a
            // bounded time and then reports — the safe reading.
            Some(Mismatch::NoMatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::error::rejected;

    #[test]
    fn mismatch_messages_are_told_apart_whatever_the_java_package() {
        let none = rejected(400, "org.operaton.bpm.engine.MismatchingMessageCorrelationException: Cannot correlate message 'm': No process definition or execution matches the parameters", None);
        assert_eq!(none.mismatch(), Some(Mismatch::NoMatch));
        let many = rejected(400, "org.camunda.bpm.engine.MismatchingMessageCorrelationException: ENGINE-13031 Cannot correlate a message with name 'm' to a single execution. 2 executions match the correlation keys: CorrelationSet [businessKey=k]", None);
        assert_eq!(many.mismatch(), Some(Mismatch::MultipleMatches));
        assert_eq!(rejected(400, "Bad variable", None).mismatch(), None);
        assert_eq!(
            rejected(500, "MismatchingMessageCorrelationException", None).mismatch(),
            None
        );
    }

    /// The engine's own bodies (engine-rest 7.24, see CAMUNDA.md), by the exception's simple
    /// name: what `complete` and `extendLock` answer when the lock is not ours, and a 400 about
    /// the call itself.
    #[test]
    fn a_refusal_about_the_lock_is_told_from_one_about_the_call() {
        let taken = rejected(
            400,
            "External Task taken cannot be completed by worker 'w-1'. It is locked by worker 'other'.",
            Some(0),
        );
        assert_eq!(taken.refusal(), Some(Refusal::Lock));
        let expired = rejected(400, "Cannot extend a lock that expired", None);
        assert_eq!(expired.refusal(), Some(Refusal::Lock));
        let bad_variable = rejected(
            400,
            "Cannot deserialize object in variable 'doc': SPIN/JACKSON-JSON-01004 Unable to find 'Json' data format",
            None,
        );
        assert_eq!(bad_variable.refusal(), Some(Refusal::Call));
        assert_eq!(
            rejected(400, "", None).refusal(),
            Some(Refusal::Call),
            "a 400 that says nothing is not about the lock"
        );
        // Not a refusal: the task is gone, the engine failed, or the call was sent twice.
        assert_eq!(
            rejected(404, "External task with id gone does not exist", Some(0)).refusal(),
            None
        );
        assert_eq!(rejected(500, "locked by worker", None).refusal(), None);
        assert_eq!(EngineError::Resent(Box::new(bad_variable)).refusal(), None);
    }
}
