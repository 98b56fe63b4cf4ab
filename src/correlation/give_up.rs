//! What a follow-up does when it cannot be delivered: give up with one ERROR and an incident on
//! the waiting execution (resolved once a reconciler delivers it after all). A message name that
//! matches nothing is the diagnosis's (see [`super::diagnosis`]).

use tokio::time::Instant;
use tracing::{debug, error, warn};

use super::{lock, Delivery, FollowUp, FollowUps, GiveUpReason, RETRY_GIVEN_UP_AFTER};
use crate::ledger::INCIDENT_TYPE;
use crate::metrics::Outcome;

impl FollowUps {
    /// Gives a follow-up up: one ERROR, an incident on the waiting execution (so Cockpit shows
    /// why), and a long wait before this worker's reconciler tries it again. The marker stays
    /// owed.
    pub(super) async fn give_up(
        &self,
        follow_up: &FollowUp,
        reason: GiveUpReason,
        cause: &str,
    ) -> Delivery {
        let task_id = follow_up.marker.task_id();
        error!(
            target = %follow_up.target,
            reason = reason.label(),
            "follow-up given up: {cause}; it stays owed in the engine and the reconciler tries it again later"
        );
        let metrics = &self.inner.metrics;
        metrics.count_topic(&metrics.follow_ups_given_up, reason, &follow_up.task.topic);
        lock(&self.inner.given_up)
            .insert(task_id.to_owned(), Instant::now() + RETRY_GIVEN_UP_AFTER);
        if let Some(instance) = follow_up.process_instance_id.as_deref() {
            let message = format!(
                "camunda-worker: follow-up message {} for task {task_id} not delivered: {cause}",
                self.route.message.name
            );
            self.raise_incident(instance, task_id, &message).await;
        }
        Delivery::GivenUp(reason)
    }

    /// Raises an incident about task `task_id`'s follow-up on the execution that waits for the
    /// message (or, when none waits, on the instance), unless one is open already.
    pub(super) async fn raise_incident(&self, instance: &str, task_id: &str, message: &str) {
        let client = &self.inner.client;
        self.spend_budget().await;
        match client.incident_ids(INCIDENT_TYPE, task_id).await {
            Ok(open) if !open.is_empty() => return,
            Ok(_) => {}
            Err(e) => debug!("cannot read the open incidents: {e}"),
        }
        self.spend_budget().await;
        let execution = match client.instance_message_waits(instance).await {
            Ok(waits) => waits
                .into_iter()
                .find(|w| w.event_name.as_deref() == Some(&self.route.message.name))
                .and_then(|w| w.execution_id),
            Err(_) => None,
        }
        .unwrap_or_else(|| instance.to_owned());
        // The engine cuts incident messages at 4000 characters.
        let message: String = message.chars().take(3900).collect();
        self.spend_budget().await;
        match client
            .create_incident(&execution, INCIDENT_TYPE, task_id, &message)
            .await
        {
            Ok(()) => {
                self.inner.metrics.follow_up_incidents.inc();
            }
            Err(e) => warn!("cannot raise an incident for the follow-up given up: {e}"),
        }
    }

    /// Resolves the incidents a follow-up given up raised, once it was delivered after all.
    pub async fn resolve_incidents(&self, task_id: &str) {
        let client = &self.inner.client;
        self.spend_budget().await;
        let Ok(open) = client.incident_ids(INCIDENT_TYPE, task_id).await else {
            return;
        };
        for id in open {
            self.spend_budget().await;
            if let Err(e) = client.delete_incident(&id).await {
                debug!("cannot resolve incident {id}: {e}");
            }
        }
    }
}
