//! Misconfiguration seen at once: when a route's message matches nothing because no instance
//! waits for a message of that name, say so — one ERROR per route and cause, naming the topic, the
//! message sent and what the instances wait for instead, and a gauge an alert can read
//! (`follow_ups_misconfigured{cause,topic}`).
//!
//! Why at the first mismatch: a misspelled `--message-name` makes every follow-up mismatch, and
//! with a thousand pending they share the retry budget, so waiting for one follow-up's later
//! attempt meant minutes before anyone was told. A mismatch is only a hint (the instance may not
//! be at the catch event yet), so the diagnosis runs after the marker read found the follow-up
//! still owed to us, and asks the engine two read-only questions: does any instance wait for our
//! message at all, and what does this instance wait for. It never writes, so exactly-once delivery
//! is untouched.
//!
//! Its load is bounded by the route, not by the follow-ups: one diagnosis in flight per route
//! (the route's other mismatches wait for its verdict, so no follow-up of a misconfigured route
//! retries before the route is diagnosed); after one that found nothing, none for
//! [`RETRY_AFTER_UNKNOWN`]; after one that found the route misconfigured, none for
//! [`REPEAT_AFTER`], after which the ERROR is repeated if the diagnosis still holds. Its requests
//! spend the retry budget ahead of the queue of retries
//! ([`crate::budget::RetryBudget::spend_first`]): the engine's load stays within `--retry-budget`.
//!
//! What stands is cleared (gauge 0, one INFO) by the engine's evidence that the route works: a
//! message of the route correlated, or a later diagnosis that finds an instance waiting for it.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info};

use super::{lock, FollowUp, FollowUps};
use crate::metrics::Outcome;

/// How often the ERROR of a misconfiguration that lasts is repeated: often enough that a log
/// search over the last few minutes finds it, rarely enough not to drown the log.
pub const REPEAT_AFTER: Duration = Duration::from_secs(300);

/// How long after a diagnosis that found nothing (the instance not at the catch event yet, or
/// the route's message awaited by some instance) the next mismatch may diagnose again.
pub const RETRY_AFTER_UNKNOWN: Duration = Duration::from_secs(5);

/// What is wrong with a route: the `cause` of `follow_ups_misconfigured`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misconfiguration {
    /// No instance waits for the route's message; its instances wait for a message of another
    /// name (a misspelled `--message-name`, or a process deployed with another name).
    MessageName,
}

impl Outcome for Misconfiguration {
    const ALL: &'static [Self] = &[Misconfiguration::MessageName];
    const LABEL: &'static str = "cause";
    fn label(self) -> &'static str {
        match self {
            Misconfiguration::MessageName => "message_name",
        }
    }
}

/// A route's diagnosis: the turn to run one, when the next may run, and what stands.
#[derive(Debug, Default)]
pub(super) struct Diagnosis {
    /// Held while a diagnosis runs; the route's other mismatches wait for it, then find
    /// `not_before` ahead and return.
    turn: tokio::sync::Mutex<()>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// No diagnosis before this.
    not_before: Option<Instant>,
    /// Causes found and not disproved yet: their topic and when their ERROR was logged.
    standing: Vec<(Misconfiguration, String, Instant)>,
}

/// What a diagnosis found.
#[derive(Debug)]
enum Verdict {
    /// The route is misconfigured; `awaited` names what the instance waits for instead.
    Misconfigured {
        cause: Misconfiguration,
        awaited: String,
        activity: String,
    },
    /// Some instance waits for the route's message: its name is right.
    Awaited,
    /// Nothing to say (the instance waits for nothing yet, or the engine did not answer).
    Unknown,
}

impl State {
    /// Records `cause` found for `topic` at `now`: whether its ERROR is due (the first time, or
    /// [`REPEAT_AFTER`] after the last one).
    fn found(&mut self, cause: Misconfiguration, topic: &str, now: Instant) -> bool {
        let last = self
            .standing
            .iter_mut()
            .find(|(c, t, _)| *c == cause && t == topic);
        match last {
            Some((_, _, logged)) if now < *logged + REPEAT_AFTER => false,
            Some((_, _, logged)) => {
                *logged = now;
                true
            }
            None => {
                self.standing.push((cause, topic.to_owned(), now));
                true
            }
        }
    }
}

impl Diagnosis {
    /// The turn to diagnose, once the one in flight (if any) is over; `None` when the last one
    /// was too recent.
    async fn begin(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        let turn = self.turn.lock().await;
        let not_before = lock(&self.state).not_before;
        match not_before {
            Some(t) if Instant::now() < t => None,
            _ => Some(turn),
        }
    }
}

#[cfg(test)]
impl Diagnosis {
    /// No diagnosis before `until`: the unit tests of delivery, whose fake engine answers no
    /// diagnosis, keep it out of their way.
    pub(super) fn hold_off(&self, until: Instant) {
        lock(&self.state).not_before = Some(until);
    }
}

impl FollowUps {
    /// After a mismatch whose marker read found the follow-up still owed to us: if no instance
    /// waits for the route's message and this one waits for another, say so (see the module
    /// doc). Waits while another follow-up of the route is diagnosing, and returns at once when
    /// one did recently.
    pub(super) async fn diagnose(&self, follow_up: &FollowUp) {
        let Some(instance) = follow_up.process_instance_id.as_deref() else {
            return;
        };
        let diagnosis = &self.route.diagnosis;
        // Dropped (also when the follow-up is aborted), the turn lets the next one run.
        let Some(_turn) = diagnosis.begin().await else {
            return;
        };
        let verdict = self.find_misconfiguration(instance).await;
        let topic = &follow_up.task.topic;
        let metrics = &self.inner.metrics;
        let now = Instant::now();
        let mut state = lock(&diagnosis.state);
        match verdict {
            Verdict::Misconfigured {
                cause,
                awaited,
                activity,
            } => {
                state.not_before = Some(now + REPEAT_AFTER);
                metrics
                    .topic_gauge(&metrics.follow_ups_misconfigured, cause, topic)
                    .set(1);
                metrics.follow_ups_misdirected.set(1);
                if !state.found(cause, topic, now) {
                    return;
                }
                drop(state);
                let ours = &self.route.message.name;
                error!(
                    topic = %topic,
                    cause = cause.label(),
                    message_name = %ours,
                    awaited = %awaited,
                    "follow-ups of topic {topic} find nothing waiting for message {ours}: no instance waits for it, and instance {instance} waits at activity {activity} for message {awaited} instead — check --message-name (message_name in the config file); pending follow-ups: {}, retried within --retry-budget; said again every {} while it lasts",
                    metrics.follow_ups_pending.get(),
                    humantime::format_duration(REPEAT_AFTER),
                );
            }
            Verdict::Awaited => {
                state.not_before = Some(now + RETRY_AFTER_UNKNOWN);
                let cleared = std::mem::take(&mut state.standing);
                drop(state);
                self.clear(cleared, "some instance waits for the message now");
            }
            Verdict::Unknown => state.not_before = Some(now + RETRY_AFTER_UNKNOWN),
        }
    }

    /// A message of this route was correlated: whatever was diagnosed no longer holds.
    pub(super) fn route_works(&self) {
        let cleared = {
            let mut state = lock(&self.route.diagnosis.state);
            if state.standing.is_empty() {
                return;
            }
            std::mem::take(&mut state.standing)
        };
        self.clear(cleared, "a follow-up message was correlated");
    }

    /// Sets the gauges of causes that no longer hold back to 0, with one line each.
    fn clear(&self, cleared: Vec<(Misconfiguration, String, Instant)>, why: &str) {
        let metrics = &self.inner.metrics;
        for (cause, topic, _) in cleared {
            metrics
                .topic_gauge(&metrics.follow_ups_misconfigured, cause, &topic)
                .set(0);
            info!(
                topic = %topic,
                cause = cause.label(),
                "follow-ups of topic {topic} are no longer diagnosed misconfigured ({}): {why}",
                cause.label()
            );
        }
    }

    /// The two read-only questions, each paid from the retry budget ahead of the retries.
    async fn find_misconfiguration(&self, instance: &str) -> Verdict {
        let client = &self.inner.client;
        let ours = &self.route.message.name;
        self.inner.budget.spend_first(&self.inner.metrics).await;
        match client.count_message_subscriptions(ours, None).await {
            Ok(0) => {}
            Ok(_) => return Verdict::Awaited,
            Err(_) => return Verdict::Unknown,
        }
        self.inner.budget.spend_first(&self.inner.metrics).await;
        let Ok(waits) = client.instance_message_waits(instance).await else {
            return Verdict::Unknown;
        };
        let others: Vec<_> = waits
            .iter()
            .filter(|w| w.event_name.as_deref().is_some_and(|n| n != ours))
            .collect();
        let Some(first) = others.first() else {
            return Verdict::Unknown;
        };
        let awaited: BTreeSet<&str> = others
            .iter()
            .filter_map(|w| w.event_name.as_deref())
            .collect();
        Verdict::Misconfigured {
            cause: Misconfiguration::MessageName,
            awaited: awaited.into_iter().collect::<Vec<_>>().join(", "),
            activity: first.activity_id.clone().unwrap_or_else(|| "-".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lasting_misconfiguration_is_said_again_only_after_the_repeat_interval() {
        let mut state = State::default();
        let t0 = Instant::now();
        let cause = Misconfiguration::MessageName;
        assert!(state.found(cause, "a", t0), "the first finding is said");
        assert!(!state.found(cause, "a", t0 + Duration::from_secs(60)));
        assert!(
            state.found(cause, "b", t0),
            "another route is another ERROR"
        );
        assert!(state.found(cause, "a", t0 + REPEAT_AFTER), "said again");
        assert!(!state.found(cause, "a", t0 + REPEAT_AFTER + Duration::from_secs(1)));
        // Cleared (a message of the route went through): a new finding is said at once.
        state.standing.clear();
        assert!(state.found(cause, "a", t0 + REPEAT_AFTER + Duration::from_secs(2)));
    }
}
