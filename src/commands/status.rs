//! `camunda-worker status`: what the engine says is waiting — the first thing to run when an
//! instance seems stuck. Besides the engine's own counts, the follow-ups as the ledger records
//! them (see [`crate::ledger`]): owed, overdue (a reconciler's to deliver), and failed work.

use crate::config::Config;
use crate::engine::{EngineClient, EngineError, TaskFilter};
use crate::ledger::{failed_range, owed_range, INCIDENT_TYPE};
use crate::route::{Route, RouteKind};

/// Prints, for each route, the waiting instances, open tasks and follow-ups of its topic and
/// message; then the engine's incidents.
pub async fn run(client: &EngineClient, config: &Config) -> Result<(), EngineError> {
    println!("engine: {}", client.base_url());
    for route in &config.routes {
        if let RouteKind::Complete(_) = route.kind {
            if config.routes.len() > 1 {
                println!("route {} (kind complete):", route.topic);
            }
            complete_route_status(client, &route.topic).await?;
            continue;
        }
        if config.routes.len() > 1 {
            println!("route {} → message {}:", route.topic, route.message.name);
        }
        route_status(client, route, &config.correlation.marker_variable).await?;
    }
    let incidents = client.count_incidents().await?;
    let ours = client.count_incidents_of(INCIDENT_TYPE).await?;
    println!("open incidents: {incidents} ({ours} of follow-ups, type {INCIDENT_TYPE})");
    if incidents > 0 {
        println!("  see Cockpit, or GET {}/incident", client.base_url());
    }
    Ok(())
}

/// What waits and what failed on a complete route: its open tasks, and those out of retries —
/// each one an incident an operator must resolve (no message, no markers on this kind).
async fn complete_route_status(client: &EngineClient, topic: &str) -> Result<(), EngineError> {
    let open = client.count_external_tasks(topic, TaskFilter::All).await?;
    let locked = client
        .count_external_tasks(topic, TaskFilter::Locked)
        .await?;
    let incidents = client
        .count_external_tasks(topic, TaskFilter::NoRetriesLeft)
        .await?;
    println!("open tasks on topic {topic}: {open} ({locked} locked)");
    println!("incidents on topic {topic}: {incidents} (tasks without retries left; set their retries to try again)");
    Ok(())
}

/// What waits and what failed on one route.
async fn route_status(
    client: &EngineClient,
    route: &Route,
    marker: &str,
) -> Result<(), EngineError> {
    let topic = &route.topic;
    let message = &route.message.name;
    let waiting = client.count_message_subscriptions(message).await?;
    let open = client.count_external_tasks(topic, TaskFilter::All).await?;
    let locked = client
        .count_external_tasks(topic, TaskFilter::Locked)
        .await?;
    let no_retries = client
        .count_external_tasks(topic, TaskFilter::NoRetriesLeft)
        .await?;
    let (owed_from, overdue_to) = owed_range(topic);
    // `;` sorts right after `:`: every owed marker of the topic, due or not.
    let owed_to = format!("owed:{topic};");
    let owed = client
        .count_variables_in_range(marker, &owed_from, &owed_to)
        .await?;
    let overdue = client
        .count_variables_in_range(marker, &owed_from, &overdue_to)
        .await?;
    let (failed_from, failed_to) = failed_range(topic);
    let failed = client
        .count_variables_in_range(marker, &failed_from, &failed_to)
        .await?;
    println!("instances waiting for message {message}: {waiting}");
    println!(
        "open tasks on topic {topic}: {open} ({locked} locked, {no_retries} without retries left)"
    );
    println!(
        "follow-ups owed on topic {topic}: {owed} ({overdue} past due, for a reconciler to deliver); work failed for good: {failed}"
    );
    Ok(())
}
