//! `camunda-worker status`: what the engine says is waiting — the first thing to run when an
//! instance seems stuck.

use crate::config::Config;
use crate::engine::{Count, EngineClient, EngineError};

/// Prints the waiting instances, open tasks and incidents for the configured topic and message.
pub async fn run(client: &EngineClient, config: &Config) -> Result<(), EngineError> {
    let topic = &config.worker.topic;
    let message = &config.correlation.message_name;
    let count = |label: &'static str, path: &'static str, query: Vec<(&'static str, String)>| {
        let client = client.clone();
        async move {
            client
                .get_json::<Count>(label, path, &query)
                .await
                .map(|c| c.count)
        }
    };
    let waiting = count(
        "eventSubscriptionCount",
        "event-subscription/count",
        vec![
            ("eventType", "message".to_owned()),
            ("eventName", message.clone()),
        ],
    )
    .await?;
    let open = count(
        "externalTaskCount",
        "external-task/count",
        vec![("topicName", topic.clone())],
    )
    .await?;
    let locked = count(
        "externalTaskCount",
        "external-task/count",
        vec![("topicName", topic.clone()), ("locked", "true".to_owned())],
    )
    .await?;
    let no_retries = count(
        "externalTaskCount",
        "external-task/count",
        vec![
            ("topicName", topic.clone()),
            ("noRetriesLeft", "true".to_owned()),
        ],
    )
    .await?;
    let incidents = count("incidentCount", "incident/count", vec![]).await?;
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
