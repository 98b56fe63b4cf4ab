//! The follow-up ledger, kept by the engine itself: one String variable per process instance
//! (the *marker*, `camundaWorkerFollowUp` by default) that says whether a follow-up message is
//! owed, and for which task.
//!
//! - `complete` sets it to [`Marker::Owed`] in the same transaction that completes the task: a
//!   completion without its record cannot happen, whatever the network does.
//! - The message names the owed value in `correlationKeys` and sets [`Marker::Delivered`] in
//!   `processVariables`: the engine matches and flips it in one transaction — a compare-and-set.
//!   A repeat, a retry after a lost reply, a second replica or a stale recovery after the process
//!   looped back cannot match again (measured on the real engines: see `engine/README.md`).
//! - The reconciler finds owed markers past their due time with one range query on the value
//!   ([`owed_range`]): the due time is a fixed-width number, so text order is time order. No
//!   history is needed, so this works at every history level.
//!
//! The marker lives in the process instance's scope: a process that loops back to the catch
//! event gets a new owed value (a new task id) each round, so each round gets exactly one
//! message. Parallel branches of one instance waiting for the same message at once are not
//! supported (the engine finds two executions and refuses the message as ambiguous).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The default name of the marker variable (`--marker-variable`).
pub const DEFAULT_MARKER_VARIABLE: &str = "camundaWorkerFollowUp";

/// The incident type a follow-up given up raises on the waiting execution.
pub const INCIDENT_TYPE: &str = "camundaWorkerFollowUp";

/// Digits of a due time (Unix milliseconds) in a marker: fixed, so that text order is time order
/// until the year 2286.
const DUE_DIGITS: usize = 13;

/// What a marker says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// A follow-up for `task_id` of `topic` is owed; a reconciler may deliver it once `due_ms`
    /// (Unix milliseconds) has passed and nobody delivered it.
    Owed {
        /// The task's topic: which route's message it owes.
        topic: String,
        /// When the reconciler may step in.
        due_ms: u64,
        /// The completed task.
        task_id: String,
    },
    /// The follow-up of `task_id` was delivered.
    Delivered {
        /// The completed task.
        task_id: String,
    },
}

impl Marker {
    /// An owed marker for `task_id`, due `after` from now.
    pub fn owed(topic: &str, task_id: &str, after: Duration) -> Marker {
        Marker::Owed {
            topic: topic.to_owned(),
            due_ms: unix_ms() + u64::try_from(after.as_millis()).unwrap_or(u64::MAX / 2),
            task_id: task_id.to_owned(),
        }
    }

    /// Reads a marker's value; `None` for a value this worker did not write.
    pub fn parse(value: &str) -> Option<Marker> {
        if let Some(task_id) = value.strip_prefix("delivered:") {
            return (!task_id.is_empty()).then(|| Marker::Delivered {
                task_id: task_id.to_owned(),
            });
        }
        // owed:<topic>:<due>:<task id>; a topic may contain ':', a task id and a due time do not.
        let rest = value.strip_prefix("owed:")?;
        let (rest, task_id) = rest.rsplit_once(':')?;
        let (topic, due) = rest.rsplit_once(':')?;
        if due.len() != DUE_DIGITS || task_id.is_empty() {
            return None;
        }
        Some(Marker::Owed {
            topic: topic.to_owned(),
            due_ms: due.parse().ok()?,
            task_id: task_id.to_owned(),
        })
    }

    /// The task the marker is about.
    pub fn task_id(&self) -> &str {
        match self {
            Marker::Owed { task_id, .. } | Marker::Delivered { task_id } => task_id,
        }
    }

    /// The marker that says this one's follow-up was delivered.
    pub fn delivered(&self) -> Marker {
        Marker::Delivered {
            task_id: self.task_id().to_owned(),
        }
    }
}

impl fmt::Display for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Marker::Owed {
                topic,
                due_ms,
                task_id,
            } => write!(f, "owed:{topic}:{due_ms:0DUE_DIGITS$}:{task_id}"),
            Marker::Delivered { task_id } => write!(f, "delivered:{task_id}"),
        }
    }
}

/// The value range `[from, to)` of the owed markers of `topic` due before now.
pub fn owed_range(topic: &str) -> (String, String) {
    let now = unix_ms();
    (
        format!("owed:{topic}:"),
        format!("owed:{topic}:{now:0DUE_DIGITS$}"),
    )
}

/// The current Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_reads_back_what_it_wrote_even_with_colons_in_the_topic() {
        for topic in ["messageSending", "a:b"] {
            let owed = Marker::owed(topic, "t-1", Duration::from_secs(12));
            assert_eq!(Marker::parse(&owed.to_string()), Some(owed.clone()));
            let delivered = owed.delivered();
            assert_eq!(delivered.to_string(), "delivered:t-1");
            assert_eq!(Marker::parse("delivered:t-1"), Some(delivered));
        }
        assert_eq!(Marker::parse("something else"), None);
        assert_eq!(
            Marker::parse("owed:x:12:t"),
            None,
            "a due time is 13 digits"
        );
    }

    #[test]
    fn the_owed_range_holds_markers_due_before_now_and_not_later_ones_or_other_topics() {
        let (from, to) = owed_range("a");
        let past = Marker::Owed {
            topic: "a".into(),
            due_ms: unix_ms() - 1_000,
            task_id: "t".into(),
        }
        .to_string();
        let future = Marker::owed("a", "t", Duration::from_secs(60)).to_string();
        let other = Marker::Owed {
            topic: "a:b".into(),
            due_ms: unix_ms() - 1_000,
            task_id: "t".into(),
        }
        .to_string();
        assert!(from <= past && past < to);
        assert!(future >= to);
        assert!(other >= to, "{other} sorts after the range of topic a");
    }
}
