//! What a follow-up does when it cannot be delivered: give up with one ERROR and an incident on
//! the waiting execution (resolved once a reconciler delivers it after all). A message name that
//! matches nothing is the diagnosis's (see [`super::diagnosis`]).

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::{lock, Delivery, FollowUp, FollowUps, GiveUpReason, RETRY_GIVEN_UP_AFTER};
use crate::engine::EngineError;
use crate::ledger::{incident_configuration, incident_task_id, INCIDENT_TYPE};
use crate::metrics::Outcome;

/// How often the open incidents are read before one is raised, when the reads fail.
const INCIDENT_READS: u32 = 3;

/// The pause before reading them again, times the attempt.
const INCIDENT_READ_PAUSE: Duration = Duration::from_millis(500);

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
    ///
    /// Two replicas may give the same follow-up up at once — a work whose lease ran out while
    /// its engine was unreachable runs on beside the one another replica's reconciler started —
    /// and each may find no incident before the other's is there. So after raising one, the
    /// worker keeps only the first of the open ones (the lowest id: every replica picks the same)
    /// and resolves the others; Cockpit shows one incident per follow-up given up. Each incident
    /// has a configuration of its own ([`incident_configuration`]), so that resolving one
    /// resolves no other.
    pub(super) async fn raise_incident(&self, instance: &str, task_id: &str, message: &str) {
        let client = &self.inner.client;
        if self
            .open_incidents(instance, task_id)
            .await
            .is_some_and(|open| !open.is_empty())
        {
            return;
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
            .create_incident(
                &execution,
                INCIDENT_TYPE,
                &incident_configuration(task_id),
                &message,
            )
            .await
        {
            Ok(()) => {
                self.inner.metrics.follow_up_incidents.inc();
            }
            // The reply may have been lost after the engine raised it: the fold below sees.
            Err(e) => warn!("cannot raise an incident for the follow-up given up: {e}"),
        }
        self.keep_first_incident(instance, task_id).await;
    }

    /// The ids of the open incidents of task `task_id`'s follow-up on process instance
    /// `instance`; `None` when they cannot be read. Read up to [`INCIDENT_READS`] times: an
    /// unreadable answer must not cost a second incident.
    async fn open_incidents(&self, instance: &str, task_id: &str) -> Option<Vec<String>> {
        for attempt in 1..=INCIDENT_READS {
            self.spend_budget().await;
            match self.incident_ids(instance, task_id).await {
                Ok(open) => return Some(open),
                Err(e) if attempt < INCIDENT_READS => {
                    debug!("cannot read the open incidents (reading again): {e}");
                    tokio::time::sleep(INCIDENT_READ_PAUSE * attempt).await;
                }
                Err(e) => debug!("cannot read the open incidents: {e}"),
            }
        }
        None
    }

    /// Resolves every open incident of the follow-up but the first (the lowest id).
    async fn keep_first_incident(&self, instance: &str, task_id: &str) {
        if let Some(open) = self.open_incidents(instance, task_id).await {
            self.keep_first_of(task_id, open).await;
        }
    }

    /// Resolves every incident in `open` — the ids of the open incidents of task `task_id`'s
    /// follow-up — but the first: the lowest id, which every replica picks, so that replicas
    /// folding at once keep the same one. Run by the replica that raised an incident, and by
    /// each reconciler pass that finds a failed follow-up with more than one open: a fold cut
    /// short (a failed `DELETE`, a replica killed between raise and fold) heals on the next pass,
    /// so a failure here needs no operator.
    pub async fn keep_first_of(&self, task_id: &str, mut open: Vec<String>) {
        open.sort_unstable();
        for id in open.iter().skip(1) {
            self.spend_budget().await;
            match self.inner.client.delete_incident(id).await {
                Ok(()) => info!(
                    task_id,
                    "resolved incident {id}: a second one for the same follow-up"
                ),
                Err(e) => debug!(
                    task_id,
                    "cannot resolve incident {id}, a second one for the same follow-up (the reconciler tries again): {e}"
                ),
            }
        }
    }

    /// Resolves the incidents a follow-up given up raised on process instance `instance`, once
    /// it was delivered after all.
    pub async fn resolve_incidents(&self, instance: &str, task_id: &str) {
        self.spend_budget().await;
        let Ok(open) = self.incident_ids(instance, task_id).await else {
            return;
        };
        for id in open {
            self.spend_budget().await;
            if let Err(e) = self.inner.client.delete_incident(&id).await {
                debug!("cannot resolve incident {id}: {e}");
            }
        }
    }

    /// The ids of the open incidents of task `task_id`'s follow-up on process instance `instance`.
    async fn incident_ids(
        &self,
        instance: &str,
        task_id: &str,
    ) -> Result<Vec<String>, EngineError> {
        let open = self
            .inner
            .client
            .open_incidents_of_instance(INCIDENT_TYPE, instance)
            .await?;
        Ok(open
            .into_iter()
            .filter(|(configuration, _)| incident_task_id(configuration) == task_id)
            .map(|(_, id)| id)
            .collect())
    }
}
