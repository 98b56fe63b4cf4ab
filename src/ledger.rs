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
//! - Nothing else ever writes the marker. A plain write (`PUT .../variables`) is blind: one that
//!   reaches the engine late — a slow network, a paused node — would set an old round's owed
//!   value back after the process looped on, and that round's message would then match again.
//! - The reconciler finds owed markers past their due time with one range query on the value
//!   ([`owed_range`]): the due time is a fixed-width number, so text order is time order. No
//!   history is needed, so this works at every history level.
//!
//! A follow-up whose work runs (see [`crate::work`]) keeps what changes while it runs in a second
//! variable that no message names, the *lease* (`<marker>Lease`, [`lease_variable`]):
//!
//! - The marker's due time, set by `complete`, is the first lease. While the work runs longer, the
//!   worker writes a lease of its own ([`Marker::Owed`] for the same task, due later) and renews it
//!   as a lock is extended; another replica's reconciler steps in only once the marker is past due
//!   and the lease is not live (a crash costs one lease).
//! - Work that failed for good leaves the lease [`Marker::Failed`] and an incident; once an
//!   operator resolves the incident, a reconciler runs the work again.
//! - At shutdown an interrupted work hands its lease back ([`Marker::handed_back`]), so that the
//!   next start runs it at once.
//!
//! A lease counts only while it names the task the marker owes: a late write of an old round's
//! lease is ignored, so at worst a work runs twice — its message, named by the marker, still
//! matches once.
//!
//! The marker lives in the process instance's scope: a process that loops back to the catch
//! event gets a new owed value (a new task id) each round, so each round gets exactly one
//! message. Parallel branches of one instance waiting for the same message at once are not
//! supported (the engine finds two executions and refuses the message as ambiguous).
//!
//! The marker's text is a contract between releases: during a rolling update the previous
//! release and this one recover each other's markers (`tests/it/rolling_update.rs` runs the
//! previous release's binary). A change to the format must keep reading the old one.

use std::fmt;
use std::time::Duration;

/// The default name of the marker variable (`--marker-variable`).
pub const DEFAULT_MARKER_VARIABLE: &str = "camundaWorkerFollowUp";

/// The name of the lease variable that goes with the marker variable `marker`.
pub fn lease_variable(marker: &str) -> String {
    format!("{marker}Lease")
}

/// The incident type a follow-up given up raises on the waiting execution.
pub const INCIDENT_TYPE: &str = "camundaWorkerFollowUp";

/// What parts a follow-up incident's `configuration`: its task id, then a part of its own.
const INCIDENT_PART: char = '#';

/// The `configuration` of a new incident about task `task_id`'s follow-up: the task id and a
/// part no other incident has. The engine resolves every incident with the configuration of the
/// one resolved (Camunda's `DefaultIncidentHandler`), so two replicas' incidents for one
/// follow-up could not be folded into one if they shared it.
pub fn incident_configuration(task_id: &str) -> String {
    let own = uuid::Uuid::new_v4().simple().to_string();
    format!("{task_id}{INCIDENT_PART}{}", &own[..12])
}

/// The task id an incident's `configuration` names (an older release wrote the task id alone).
pub fn incident_task_id(configuration: &str) -> &str {
    configuration
        .split_once(INCIDENT_PART)
        .map_or(configuration, |(task_id, _)| task_id)
}

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
    /// The work of `task_id`'s follow-up failed for good; an incident says why. Resolving it
    /// makes a reconciler run the work again. (A lease; markers of earlier releases too.)
    Failed {
        /// The task's topic.
        topic: String,
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
        if let Some(rest) = value.strip_prefix("failed:") {
            let (topic, task_id) = rest.rsplit_once(':')?;
            return (!task_id.is_empty()).then(|| Marker::Failed {
                topic: topic.to_owned(),
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
            Marker::Owed { task_id, .. }
            | Marker::Failed { task_id, .. }
            | Marker::Delivered { task_id } => task_id,
        }
    }

    /// The topic of an owed or failed marker (a delivered one has none).
    pub fn topic(&self) -> Option<&str> {
        match self {
            Marker::Owed { topic, .. } | Marker::Failed { topic, .. } => Some(topic),
            Marker::Delivered { .. } => None,
        }
    }

    /// A lease on the same follow-up, held for `after` from now.
    pub fn owed_again(&self, after: Duration) -> Marker {
        Marker::owed(self.topic().unwrap_or_default(), self.task_id(), after)
    }

    /// The lease of an interrupted work handed back at shutdown: due at the start of time, so
    /// that [`handed_back_range`] finds it and the next start runs the work at once.
    pub fn handed_back(&self) -> Marker {
        Marker::Owed {
            topic: self.topic().unwrap_or_default().to_owned(),
            due_ms: 0,
            task_id: self.task_id().to_owned(),
        }
    }

    /// Whether this lease holds off the reconcilers from the follow-up `owed` (the marker): a
    /// lease on the same task, due later than `now_ms`, or failed (its incident decides).
    pub fn holds(&self, owed: &Marker, now_ms: u64) -> bool {
        if self.task_id() != owed.task_id() {
            return false;
        }
        match self {
            Marker::Owed { due_ms, .. } => *due_ms > now_ms,
            Marker::Failed { .. } => true,
            Marker::Delivered { .. } => false,
        }
    }

    /// The marker that says this follow-up's work failed for good.
    pub fn failed(&self) -> Marker {
        Marker::Failed {
            topic: self.topic().unwrap_or_default().to_owned(),
            task_id: self.task_id().to_owned(),
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
            Marker::Failed { topic, task_id } => write!(f, "failed:{topic}:{task_id}"),
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

/// The value range `[from, to)` of the leases of `topic` handed back at shutdown.
pub fn handed_back_range(topic: &str) -> (String, String) {
    let zero = 0u64;
    (
        format!("owed:{topic}:{zero:0DUE_DIGITS$}:"),
        format!("owed:{topic}:{zero:0DUE_DIGITS$};"),
    )
}

/// The value range `[from, to)` of the failed leases of `topic` (`;` is the character after `:`).
pub fn failed_range(topic: &str) -> (String, String) {
    (format!("failed:{topic}:"), format!("failed:{topic};"))
}

/// The current Unix time in milliseconds on the engine's clock ([`crate::engine_clock`]): due
/// times are written and compared in it, so replicas whose own clocks disagree agree on them.
pub fn unix_ms() -> u64 {
    crate::engine_clock::now_ms()
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
        let failed = Marker::owed("a:b", "t-2", Duration::ZERO).failed();
        assert_eq!(failed.to_string(), "failed:a:b:t-2");
        assert_eq!(Marker::parse("failed:a:b:t-2"), Some(failed.clone()));
        let (from, to) = failed_range("a:b");
        assert!(from.as_str() <= "failed:a:b:t-2" && "failed:a:b:t-2" < to.as_str());
        assert!(failed
            .owed_again(Duration::from_secs(5))
            .to_string()
            .starts_with("owed:a:b:"));
        let back = failed.handed_back();
        let (from, to) = handed_back_range("a:b");
        assert_eq!(Marker::parse(&back.to_string()), Some(back.clone()));
        assert!(from <= back.to_string() && back.to_string() < to);
        assert!(!back.holds(&Marker::owed("a:b", "t-2", Duration::ZERO), unix_ms()));
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

    #[test]
    fn a_lease_holds_off_reconcilers_only_for_the_task_the_marker_owes_and_only_while_live() {
        let owed = Marker::owed("a", "t-1", Duration::ZERO);
        let now = unix_ms();
        let live = Marker::owed("a", "t-1", Duration::from_secs(60));
        assert!(live.holds(&owed, now));
        assert!(!live.holds(&owed, now + 61_000), "a lease that ran out");
        let other_round = Marker::owed("a", "t-0", Duration::from_secs(60));
        assert!(
            !other_round.holds(&owed, now),
            "a late write of an old round's lease"
        );
        assert!(
            live.failed().holds(&owed, now),
            "failed: the incident decides"
        );
        assert!(!other_round.failed().holds(&owed, now));
    }

    #[test]
    fn each_incident_has_a_configuration_of_its_own_that_names_its_task() {
        let (one, two) = (incident_configuration("t-1"), incident_configuration("t-1"));
        assert_ne!(one, two, "resolving one must resolve no other");
        assert_eq!(incident_task_id(&one), "t-1");
        assert_eq!(incident_task_id(&two), "t-1");
        assert_eq!(incident_task_id("t-1"), "t-1", "an older release's");
    }
}
