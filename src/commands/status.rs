//! `camunda-worker status`: what the engine says is waiting — the first thing to run when an
//! instance seems stuck.

use crate::config::Config;
use crate::engine::{EngineClient, EngineError, TaskFilter};

/// Prints the waiting instances, open tasks and incidents for the configured topic and message.
pub async fn run(client: &EngineClient, config: &Config) -> Result<(), EngineError> {
    let topic = &config.worker.topic;
    let message = &config.correlation.message_name;
    let waiting = client.count_message_subscriptions(message).await?;
    let open = client.count_external_tasks(topic, TaskFilter::All).await?;
    let locked = client
        .count_external_tasks(topic, TaskFilter::Locked)
        .await?;
    let no_retries = client
        .count_external_tasks(topic, TaskFilter::NoRetriesLeft)
        .await?;
    let incidents = client.count_incidents().await?;
    println!("engine: {}", client.base_url());
    println!("instances waiting for message {message}: {waiting}");
    println!(
        "open tasks on topic {topic}: {open} ({locked} locked, {no_retries} without retries left)"
    );
    println!("open incidents: {incidents}");
    if incidents > 0 {
        println!("  see Cockpit, or GET {}/incident", client.base_url());
    }
    Ok(())
}
