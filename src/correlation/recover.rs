//! Recovery on the live path: a reconciler that found an owed marker past its due time (see
//! [`crate::reconciler`]) hands it here, and it is delivered by one [`FollowUps::attempt`] — the
//! same compare-and-set message, the same decision of a mismatch — after spending the retry
//! budget (a recovery is never a first attempt). The reconciler's query has just read the marker
//! owed, so the attempt's first mismatch needs no read of its own: the instance does not wait.
//! The reconciler keeps its own backoff between passes.

use tokio::time::Instant;
use tracing::Instrument;

use super::calls::Ledger;
use super::deliver::{Attempt, Progress};
use super::{CorrelationTarget, FollowUp, FollowUps};
use crate::engine::EngineError;
use crate::ledger::Marker;
use crate::variables::Variables;
use crate::work::CompletedTask;

/// What a reconciler's attempt to deliver an owed marker found.
#[derive(Debug)]
pub enum Recovery {
    /// The message matched (or the follow-up was delivered already).
    Delivered,
    /// The instance does not wait for the message (yet).
    NotWaiting,
    /// The engine failed or refused the message.
    Failed(EngineError),
}

impl FollowUps {
    /// Delivers an owed marker of `instance` that a reconciler found past its due time: one
    /// attempt of the live path, after spending the retry budget (a recovery is never a first
    /// attempt). Its query has just read the marker owed, so a mismatch means not waiting.
    /// `tenant_id` is the instance's tenant as the query found it: the target keeps it, as the
    /// live follow-up's does.
    pub async fn recover_owed(
        &self,
        marker: &Marker,
        instance: &str,
        tenant_id: Option<&str>,
    ) -> Recovery {
        self.recover_via(&self.inner.client, marker, instance, tenant_id)
            .await
    }

    /// [`FollowUps::recover_owed`] through `ledger`.
    async fn recover_via<L: Ledger>(
        &self,
        ledger: &L,
        marker: &Marker,
        instance: &str,
        tenant_id: Option<&str>,
    ) -> Recovery {
        let follow_up = FollowUp {
            target: CorrelationTarget {
                business_key: None,
                process_instance_id: Some(instance.to_owned()),
                tenant_id: tenant_id.map(str::to_owned),
            },
            process_instance_id: Some(instance.to_owned()),
            marker: marker.clone(),
            lease: None,
            task: CompletedTask {
                task_id: marker.task_id().to_owned(),
                topic: marker.topic().unwrap_or_default().to_owned(),
                business_key: None,
                process_instance_id: Some(instance.to_owned()),
                variables: Default::default(),
                extension_properties: None,
            },
            fetched_at: None,
            completed_at: Instant::now(),
            recovered: true,
            trace_parent: None,
        };
        // A trace of its own (no trace context is stored in the engine), named by the task id.
        let span = super::follow_up_span(&follow_up, marker.task_id());
        let recovery = async {
            let mut progress = Progress::after_marker_read();
            self.spend_budget().await;
            let none = Variables::new();
            let attempt = self.attempt(ledger, &follow_up, &none, &mut progress);
            match Box::pin(attempt).await {
                Attempt::Delivered | Attempt::DeliveredEarlier(_) => Recovery::Delivered,
                Attempt::NotWaiting => Recovery::NotWaiting,
                Attempt::Ambiguous(e) | Attempt::Refused(e) | Attempt::EngineTrouble(e) => {
                    Recovery::Failed(e)
                }
            }
        };
        let recovery = recovery.instrument(span.clone()).await;
        span.record("outcome", tracing::field::debug(&recovery));
        recovery
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::fake::{self, Call, FakeLedger};
    use super::super::{CorrelationPolicy, FollowUpMessage};
    use super::Recovery;
    use crate::ledger::Marker;
    use crate::work::Delay;

    /// A recovery of an owed marker against an engine that answers its message `reply`: what it
    /// found, the calls it made, and the budget it spent.
    async fn recover(reply: Result<(), crate::engine::EngineError>) -> (Recovery, Vec<Call>, u64) {
        let follow_ups = fake::follow_ups(
            CorrelationPolicy::default(),
            FollowUpMessage::default(),
            Arc::new(Delay),
        );
        let marker = Marker::owed("t", "task-1", Duration::ZERO);
        let ledger = FakeLedger::holding(&marker);
        ledger.answer_messages(vec![reply]);
        let recovery = follow_ups
            .recover_via(&ledger, &marker, "pi-1", Some("a"))
            .await;
        let spent = follow_ups.inner.metrics.retry_budget_spent.get();
        (recovery, ledger.kinds(), spent)
    }

    #[tokio::test(start_paused = true)]
    async fn a_recovery_sends_the_markers_own_message_once_within_the_budget() {
        let (recovery, calls, spent) = recover(Ok(())).await;
        assert!(matches!(recovery, Recovery::Delivered), "{recovery:?}");
        let marker = Marker::owed("t", "task-1", Duration::ZERO);
        let Call::Correlate(named) = &calls[0] else {
            panic!("{calls:?}");
        };
        let named = Marker::parse(named).expect("a marker");
        assert_eq!(named.task_id(), marker.task_id());
        assert_eq!(calls.len(), 1);
        assert_eq!(spent, 1, "a recovery is never a first attempt");
    }

    #[tokio::test(start_paused = true)]
    async fn a_recoverys_mismatch_means_not_waiting_without_a_second_read() {
        let (recovery, calls, spent) = recover(Err(fake::no_match())).await;
        assert!(matches!(recovery, Recovery::NotWaiting), "{recovery:?}");
        assert_eq!(
            calls.len(),
            1,
            "the reconciler's query read the marker: {calls:?}"
        );
        assert_eq!(spent, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_recovery_the_engine_fails_is_tried_again_by_a_later_pass() {
        let (recovery, calls, _) = recover(Err(fake::unavailable())).await;
        assert!(matches!(recovery, Recovery::Failed(_)), "{recovery:?}");
        assert_eq!(calls.len(), 1, "no retry within the pass: {calls:?}");
    }
}
