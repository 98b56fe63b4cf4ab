//! Follow-up work of your own, in Rust: after each task is completed, ask an HTTP service for the
//! result (as long as it takes — no lock is held), then the follow-up message carries it.
//!
//! ```text
//! SERVICE_URL=http://localhost:9000/quote cargo run --example http_follow_up -- \
//!     --engine-url http://localhost:8080/engine-rest
//! ```
//!
//! The work may run again after a crash (another worker runs it once the lease has run out), so
//! the service is called with the task id as an idempotency key. Every flag of the daemon works
//! here too.

use camunda_worker::variables::{TypedValue, Variables};
use camunda_worker::work::{CompletedTask, FollowUpWork, WorkError};
use tokio_util::sync::CancellationToken;

/// Posts the order to a quoting service and puts its answer in the message as `quote`.
struct AskForAQuote {
    http: reqwest::Client,
    service_url: String,
}

impl FollowUpWork for AskForAQuote {
    fn variables_to_fetch(&self) -> Vec<String> {
        vec!["orderId".to_owned()]
    }

    async fn run(
        &self,
        task: &CompletedTask,
        shutdown: &CancellationToken,
    ) -> Result<Variables, WorkError> {
        let request = self
            .http
            .post(&self.service_url)
            .header("Idempotency-Key", &task.task_id)
            .json(&serde_json::json!({
                "orderId": task.variables.get("orderId"),
                "businessKey": task.business_key,
            }))
            .send();
        let reply = tokio::select! {
            reply = request => reply,
            // Shutdown has begun: give up this run; the follow-up stays owed for the next start.
            () = shutdown.cancelled() => return Err(WorkError::transient("shutting down")),
        };
        let reply = reply
            .and_then(|r| r.error_for_status())
            .map_err(|e| WorkError::transient(format!("quote service: {e}")))?;
        let quote: serde_json::Value = reply
            .json()
            .await
            .map_err(|e| WorkError::permanent(format!("quote service: not JSON: {e}")))?;
        Ok(Variables::from([(
            "quote".to_owned(),
            TypedValue::from_json(quote),
        )]))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (_, _, config) = match camunda_worker::config::load(std::env::args_os()) {
        Ok(loaded) => loaded,
        Err(error) => error.exit(),
    };
    camunda_worker::telemetry::init(config.log_format);
    let work = AskForAQuote {
        http: reqwest::Client::new(),
        service_url: std::env::var("SERVICE_URL")
            .unwrap_or_else(|_| "http://localhost:9000/quote".to_owned()),
    };
    let stop = CancellationToken::new();
    camunda_worker::shutdown::listen_for_signals(stop.clone());
    camunda_worker::daemon::run_with_work(&config, work, stop).await?;
    Ok(())
}
