//! What the checker reads, gathered once the run is over: the messages the engine accepted, from
//! every proxy's record, and each instance's rounds and incidents, from the engine's history.

use std::collections::HashMap;
use std::time::SystemTime;

use serde_json::Value;

use crate::support::engine::Rest;
use crate::support::proxy::Exchange;
use crate::support::work::MARKER;

use super::check::{Accepted, Instance, Observed, Round};
use super::scene::Scene;

/// The business keys whose work fails on purpose start with this.
pub const FAILING: &str = "fail";

/// A message the engine accepted, with the task it was for; `None` for any other exchange.
fn accepted(exchange: &Exchange) -> Option<Accepted> {
    let status = exchange.engine_status?;
    if exchange.method != "POST"
        || !exchange.path.ends_with("/message")
        || !(200..300).contains(&status)
    {
        return None;
    }
    let flipped = exchange.body["processVariables"][MARKER]["value"].as_str();
    let owed = exchange.body["correlationKeys"][MARKER]["value"].as_str();
    let task_id = match (flipped.and_then(|v| v.strip_prefix("delivered:")), owed) {
        (Some(task), _) => task.to_owned(),
        (None, Some(owed)) => owed.rsplit(':').next().unwrap_or(owed).to_owned(),
        (None, None) => format!("(no marker in {})", exchange.body),
    };
    Some(Accepted {
        task_id,
        sent: exchange.sent,
    })
}

/// Reads everything the checker needs.
pub async fn observe(scene: &Scene, rounds: u32) -> Observed {
    let rest = Rest::new(&scene.rest_url);
    let accepted = scene
        .replicas
        .iter()
        .flat_map(|r| &r.proxies)
        .flat_map(|p| p.proxy.exchanges())
        .filter_map(|e| accepted(&e))
        .collect();
    let mut instances = Vec::new();
    let processes = &scene.processes;
    let looping = Shape {
        rounds: rounds as usize,
        has_work: true,
        messages_per_round: 1,
    };
    instances.extend(instances_of(&rest, &processes.bundled.0, Shape::BUNDLED).await);
    instances.extend(instances_of(&rest, &processes.looping.0, looping).await);
    instances.extend(instances_of(&rest, &processes.plain.0, Shape::PLAIN).await);
    let mut work_runs = HashMap::new();
    for task in scene.work.lines("runs") {
        *work_runs.entry(task).or_insert(0) += 1;
    }
    Observed {
        accepted,
        instances,
        work_runs,
    }
}

/// What a process's instances look like when they have finished.
#[derive(Debug, Clone, Copy)]
struct Shape {
    rounds: usize,
    has_work: bool,
    messages_per_round: usize,
}

impl Shape {
    /// The bundled process on a message route with no command: one task, one message.
    const BUNDLED: Shape = Shape {
        rounds: 1,
        has_work: false,
        messages_per_round: 1,
    };
    /// The plain task on a complete route: one task, its command, no message.
    const PLAIN: Shape = Shape {
        rounds: 1,
        has_work: true,
        messages_per_round: 0,
    };
}

async fn instances_of(rest: &Rest, key: &str, shape: Shape) -> Vec<Instance> {
    let key_only = [("processDefinitionKey", key)];
    let mut rounds_of: HashMap<String, Vec<Round>> = HashMap::new();
    let created = rest
        .get(
            "history/external-task-log",
            &[("processDefinitionKey", key), ("creationLog", "true")],
        )
        .await;
    for log in created.as_array().expect("a task log list") {
        let instance = text(log, "processInstanceId");
        rounds_of.entry(instance).or_default().push(Round {
            task_id: text(log, "externalTaskId"),
            created: engine_time(&text(log, "timestamp")),
        });
    }
    // Per instance: incidents ever, and those still open.
    let mut incidents_of: HashMap<String, (usize, usize)> = HashMap::new();
    let incidents = rest.get("history/incident", &key_only).await;
    for incident in incidents.as_array().expect("an incident list") {
        let counts = incidents_of
            .entry(text(incident, "processInstanceId"))
            .or_default();
        counts.0 += 1;
        counts.1 += usize::from(incident["open"] == true);
    }
    let listed = rest.get("history/process-instance", &key_only).await;
    listed
        .as_array()
        .expect("an instance list")
        .iter()
        .map(|found| {
            let id = text(found, "id");
            let business_key = text(found, "businessKey");
            let mut rounds_seen = rounds_of.remove(&id).unwrap_or_default();
            rounds_seen.sort_by_key(|r| r.created);
            Instance {
                incidents: incidents_of.get(&id).map_or(0, |c| c.0),
                open_incidents: incidents_of.get(&id).map_or(0, |c| c.1),
                state: text(found, "state"),
                rounds: rounds_seen,
                rounds_expected: shape.rounds,
                messages_per_round: shape.messages_per_round,
                has_work: shape.has_work,
                fails_on_purpose: business_key.starts_with(FAILING),
                business_key,
                id,
            }
        })
        .collect()
}

fn text(value: &Value, field: &str) -> String {
    value[field].as_str().unwrap_or_default().to_owned()
}

/// An engine timestamp (`2026-12-06T07:01:02.345+0000`): RFC 3339 but for the colon its offset
/// lacks.
fn engine_time(stamp: &str) -> SystemTime {
    let (moment, minutes) = stamp.split_at(stamp.len().saturating_sub(2));
    let rfc3339 = format!("{moment}:{minutes}");
    let parsed =
        time::OffsetDateTime::parse(&rfc3339, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("engine timestamp {stamp:?}: {e}"));
    SystemTime::from(parsed)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn an_engine_timestamp_reads_to_the_millisecond_with_its_offset() {
        let utc = super::engine_time("2026-12-06T07:01:02.345+0000");
        assert_eq!(utc, UNIX_EPOCH + Duration::from_millis(1_796_540_462_345));
        let east = super::engine_time("2026-12-06T08:01:02.345+0100");
        assert_eq!(east, utc);
    }
}
