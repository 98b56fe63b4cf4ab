//! The chaos soak's judge, independent of the worker: it reads only what the engine accepted (the
//! fault proxies' record of every exchange) and what the engine's history says, never the
//! worker's own counters or logs.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, SystemTime};

/// A message the engine accepted (2xx), as the proxies recorded it.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The task whose follow-up it is (from the marker it flips to `delivered:<task id>`).
    pub task_id: String,
    /// When the request left the proxy for the engine.
    pub sent: SystemTime,
}

/// One external task of an instance, from the engine's task log.
#[derive(Debug, Clone)]
pub struct Round {
    pub task_id: String,
    /// When the engine created the task (the round began).
    pub created: SystemTime,
}

/// One process instance as the engine's history tells it.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub business_key: String,
    /// History's state: `COMPLETED`, `ACTIVE`, ...
    pub state: String,
    /// Its external tasks in creation order: one per round.
    pub rounds: Vec<Round>,
    /// How many rounds it has when it finishes (1 for the bundled process).
    pub rounds_expected: usize,
    /// Messages each round gets: 1 on a message route, 0 on a complete route (its work decides
    /// the task itself).
    pub messages_per_round: usize,
    /// Incidents ever raised on it, open or resolved.
    pub incidents: usize,
    /// Those still open.
    pub open_incidents: usize,
    /// Whether the round's follow-up work runs a command that records its runs.
    pub has_work: bool,
    /// Whether its business key makes the work fail on purpose: it must end in an incident.
    pub fails_on_purpose: bool,
}

/// Everything the checker reads.
#[derive(Debug, Default)]
pub struct Observed {
    pub accepted: Vec<Accepted>,
    pub instances: Vec<Instance>,
    /// How often the work ran, per task id (its command appends the task id to a file).
    pub work_runs: HashMap<String, usize>,
}

/// A broken promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The instance did not finish once the faults had healed.
    NotFinished { instance: String, state: String },
    /// It finished with a number of rounds other than its process's.
    WrongRounds {
        instance: String,
        rounds: usize,
        expected: usize,
    },
    /// A round got a number of accepted messages other than its route's (one on a message route,
    /// none on a complete route or for a failing key).
    Messages {
        instance: String,
        task_id: String,
        accepted: usize,
        expected: usize,
    },
    /// A message was accepted for a round after the instance's next round had begun.
    StaleMessage { instance: String, task_id: String },
    /// The engine accepted a message for a task no instance under test has.
    UnknownTask { task_id: String },
    /// A round's work never ran.
    WorkNeverRan { instance: String, task_id: String },
    /// An incident ever on a key that did not fail on purpose, or other than one open incident on
    /// one that did (a second one raised at the same moment by another replica must be resolved).
    Incidents {
        instance: String,
        business_key: String,
        incidents: usize,
        expected: usize,
    },
}

impl Violation {
    /// The instance the violation is about, where it is about one.
    pub fn instance(&self) -> Option<&str> {
        match self {
            Violation::NotFinished { instance, .. }
            | Violation::WrongRounds { instance, .. }
            | Violation::Messages { instance, .. }
            | Violation::StaleMessage { instance, .. }
            | Violation::WorkNeverRan { instance, .. }
            | Violation::Incidents { instance, .. } => Some(instance),
            Violation::UnknownTask { .. } => None,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// What the checker counted besides the violations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Figures {
    pub instances: usize,
    pub rounds: usize,
    pub messages_accepted: usize,
    /// Rounds whose work ran more than once (allowed: the work runs at least once).
    pub work_reruns: usize,
    pub incidents: usize,
}

/// How much earlier than a message's sending the engine may stamp the next round's creation and
/// still be after it: the engine's timestamps are whole milliseconds.
const CLOCK_SLACK: Duration = Duration::from_millis(2);

/// Judges what was observed; no violation means every promise held.
pub fn check(observed: &Observed) -> (Vec<Violation>, Figures) {
    let mut violations = Vec::new();
    let mut figures = Figures::default();
    let mut by_task: BTreeMap<&str, Vec<&Accepted>> = BTreeMap::new();
    for message in &observed.accepted {
        by_task.entry(&message.task_id).or_default().push(message);
    }
    figures.messages_accepted = observed.accepted.len();
    for instance in &observed.instances {
        figures.instances += 1;
        figures.rounds += instance.rounds.len();
        figures.incidents += instance.incidents;
        check_instance(instance, observed, &by_task, &mut violations, &mut figures);
        for round in &instance.rounds {
            by_task.remove(round.task_id.as_str());
        }
    }
    for task_id in by_task.keys() {
        violations.push(Violation::UnknownTask {
            task_id: (*task_id).to_owned(),
        });
    }
    (violations, figures)
}

fn check_instance(
    instance: &Instance,
    observed: &Observed,
    by_task: &BTreeMap<&str, Vec<&Accepted>>,
    violations: &mut Vec<Violation>,
    figures: &mut Figures,
) {
    let id = || instance.id.clone();
    let finished = if instance.fails_on_purpose {
        instance.state == "ACTIVE"
    } else {
        instance.state == "COMPLETED"
    };
    if !finished {
        violations.push(Violation::NotFinished {
            instance: id(),
            state: instance.state.clone(),
        });
    }
    let (incidents, expected) = if instance.fails_on_purpose {
        (instance.open_incidents, 1)
    } else {
        (instance.incidents, 0)
    };
    if incidents != expected {
        violations.push(Violation::Incidents {
            instance: id(),
            business_key: instance.business_key.clone(),
            incidents,
            expected,
        });
    }
    if instance.state == "COMPLETED" && instance.rounds.len() != instance.rounds_expected {
        violations.push(Violation::WrongRounds {
            instance: id(),
            rounds: instance.rounds.len(),
            expected: instance.rounds_expected,
        });
    }
    for (index, round) in instance.rounds.iter().enumerate() {
        let accepted = by_task
            .get(round.task_id.as_str())
            .map_or(&[][..], Vec::as_slice);
        let expected = if instance.fails_on_purpose {
            0
        } else {
            instance.messages_per_round
        };
        if accepted.len() != expected {
            violations.push(Violation::Messages {
                instance: id(),
                task_id: round.task_id.clone(),
                accepted: accepted.len(),
                expected,
            });
        }
        if let Some(next) = instance.rounds.get(index + 1) {
            if accepted.iter().any(|m| next.created + CLOCK_SLACK < m.sent) {
                violations.push(Violation::StaleMessage {
                    instance: id(),
                    task_id: round.task_id.clone(),
                });
            }
        }
        if instance.has_work {
            match observed.work_runs.get(&round.task_id).copied().unwrap_or(0) {
                0 => violations.push(Violation::WorkNeverRan {
                    instance: id(),
                    task_id: round.task_id.clone(),
                }),
                1 => {}
                _ => figures.work_reruns += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
    }

    fn looping(id: &str, rounds: &[(&str, u64)]) -> Instance {
        Instance {
            id: id.to_owned(),
            business_key: format!("key-{id}"),
            state: "COMPLETED".to_owned(),
            rounds: rounds
                .iter()
                .map(|(task, ms)| Round {
                    task_id: (*task).to_owned(),
                    created: at(*ms),
                })
                .collect(),
            rounds_expected: rounds.len(),
            messages_per_round: 1,
            incidents: 0,
            open_incidents: 0,
            has_work: true,
            fails_on_purpose: false,
        }
    }

    fn accepted(task: &str, ms: u64) -> Accepted {
        Accepted {
            task_id: task.to_owned(),
            sent: at(ms),
        }
    }

    /// Two instances of three rounds, each round's message sent before the next round began, and
    /// each work run once.
    fn clean() -> Observed {
        let mut observed = Observed::default();
        for (i, base) in [(1, 0), (2, 10_000)] {
            let tasks: Vec<(String, u64)> = (0..3)
                .map(|r| (format!("t{i}{r}"), base + r * 1000))
                .collect();
            let rounds: Vec<(&str, u64)> = tasks.iter().map(|(t, ms)| (t.as_str(), *ms)).collect();
            observed.instances.push(looping(&format!("p{i}"), &rounds));
            for (task, ms) in &tasks {
                observed.accepted.push(accepted(task, ms + 500));
                observed.work_runs.insert(task.clone(), 1);
            }
        }
        observed
    }

    #[test]
    fn a_clean_run_has_no_violation_and_its_figures() {
        let (violations, figures) = check(&clean());
        assert_eq!(violations, vec![]);
        assert_eq!(
            figures,
            Figures {
                instances: 2,
                rounds: 6,
                messages_accepted: 6,
                work_reruns: 0,
                incidents: 0
            }
        );
    }

    #[test]
    fn a_second_accepted_message_for_one_round_is_a_violation() {
        let mut observed = clean();
        observed.accepted.push(accepted("t11", 1600));
        let (violations, _) = check(&observed);
        assert_eq!(
            violations,
            vec![Violation::Messages {
                instance: "p1".into(),
                task_id: "t11".into(),
                accepted: 2,
                expected: 1
            }]
        );
    }

    #[test]
    fn a_round_without_its_message_is_a_violation() {
        let mut observed = clean();
        observed.accepted.retain(|m| m.task_id != "t22");
        let (violations, _) = check(&observed);
        assert_eq!(
            violations,
            vec![Violation::Messages {
                instance: "p2".into(),
                task_id: "t22".into(),
                accepted: 0,
                expected: 1
            }]
        );
    }

    #[test]
    fn a_message_sent_after_the_next_round_began_is_stale() {
        let mut observed = clean();
        // Round t10's message left after t11 (created at 1000) had begun.
        observed.accepted.retain(|m| m.task_id != "t10");
        observed.accepted.push(accepted("t10", 1200));
        let (violations, _) = check(&observed);
        assert_eq!(
            violations,
            vec![Violation::StaleMessage {
                instance: "p1".into(),
                task_id: "t10".into()
            }]
        );
    }

    #[test]
    fn a_message_for_a_task_of_no_instance_is_a_violation() {
        let mut observed = clean();
        observed.accepted.push(accepted("elsewhere", 5));
        let (violations, _) = check(&observed);
        assert_eq!(
            violations,
            vec![Violation::UnknownTask {
                task_id: "elsewhere".into()
            }]
        );
    }

    #[test]
    fn an_unfinished_instance_and_a_short_one_are_violations() {
        let mut observed = clean();
        observed.instances[0].state = "ACTIVE".into();
        observed.instances[1].rounds_expected = 4;
        let (violations, _) = check(&observed);
        assert_eq!(
            violations,
            vec![
                Violation::NotFinished {
                    instance: "p1".into(),
                    state: "ACTIVE".into()
                },
                Violation::WrongRounds {
                    instance: "p2".into(),
                    rounds: 3,
                    expected: 4
                }
            ]
        );
    }

    #[test]
    fn work_that_never_ran_is_a_violation_and_reruns_are_counted() {
        let mut observed = clean();
        observed.work_runs.remove("t10");
        observed.work_runs.insert("t21".into(), 3);
        let (violations, figures) = check(&observed);
        assert_eq!(
            violations,
            vec![Violation::WorkNeverRan {
                instance: "p1".into(),
                task_id: "t10".into()
            }]
        );
        assert_eq!(figures.work_reruns, 1);
    }

    /// One incident open at the end on a failing key: a second one raised at the same moment and
    /// resolved is no violation, two open are.
    #[test]
    fn a_failing_key_must_wait_with_one_incident_and_no_message() {
        let mut observed = clean();
        observed.instances.push(Instance {
            state: "ACTIVE".into(),
            incidents: 2,
            open_incidents: 1,
            fails_on_purpose: true,
            ..looping("p3", &[("t30", 20_000)])
        });
        observed.work_runs.insert("t30".into(), 2);
        assert_eq!(check(&observed).0, vec![]);

        observed.accepted.push(accepted("t30", 20_500));
        observed.instances[2].open_incidents = 0;
        let (violations, _) = check(&observed);
        assert_eq!(
            violations,
            vec![
                Violation::Incidents {
                    instance: "p3".into(),
                    business_key: "key-p3".into(),
                    incidents: 0,
                    expected: 1
                },
                Violation::Messages {
                    instance: "p3".into(),
                    task_id: "t30".into(),
                    accepted: 1,
                    expected: 0
                }
            ]
        );
    }

    #[test]
    fn a_complete_routes_task_gets_no_message_and_one_is_a_violation() {
        let mut observed = clean();
        observed.instances.push(Instance {
            messages_per_round: 0,
            ..looping("p4", &[("t40", 30_000)])
        });
        observed.work_runs.insert("t40".into(), 1);
        assert_eq!(check(&observed).0, vec![]);

        observed.accepted.push(accepted("t40", 30_500));
        let (violations, _) = check(&observed);
        assert_eq!(
            violations,
            vec![Violation::Messages {
                instance: "p4".into(),
                task_id: "t40".into(),
                accepted: 1,
                expected: 0
            }]
        );
    }

    #[test]
    fn two_open_incidents_on_a_failing_key_are_a_violation() {
        let mut observed = clean();
        observed.instances.push(Instance {
            state: "ACTIVE".into(),
            incidents: 2,
            open_incidents: 2,
            fails_on_purpose: true,
            ..looping("p5", &[("t50", 40_000)])
        });
        observed.work_runs.insert("t50".into(), 1);
        assert_eq!(
            check(&observed).0,
            vec![Violation::Incidents {
                instance: "p5".into(),
                business_key: "key-p5".into(),
                incidents: 2,
                expected: 1
            }]
        );
    }

    #[test]
    fn an_incident_on_a_key_that_should_not_fail_is_a_violation() {
        let mut observed = clean();
        observed.instances[1].incidents = 1;
        let (violations, _) = check(&observed);
        assert_eq!(
            violations,
            vec![Violation::Incidents {
                instance: "p2".into(),
                business_key: "key-p2".into(),
                incidents: 1,
                expected: 0
            }]
        );
    }
}
