//! The reconciler's pass for a route with work: which owed follow-ups it claims and runs whole.
//!
//! A follow-up with work is the reconcilers' once its marker is past due (the first lease, which
//! `complete` wrote) and its lease (see [`crate::ledger`]) holds nobody off: none written, an old
//! round's, run out, or handed back at shutdown. A failed lease keeps it until its incident is
//! resolved; then the work runs again. Handed-back and failed leases are also found by queries of
//! their own, so that neither waits for the marker's first lease to run out: the marker of each
//! is then read, and only a marker still owed for the lease's task counts — a lease written late,
//! after the process moved on, is ignored.

use std::collections::HashMap;

use tracing::{debug, info};

use super::{report_undelivered, FoundMarker, PassSummary, Reconciler};
use crate::engine::EngineError;
use crate::ledger::{
    failed_range, handed_back_range, incident_task_id, unix_ms, Marker, INCIDENT_TYPE,
};

/// Open incidents of the follow-ups' type read in one query before the pass reads them per
/// instance instead: 500 of at most ~4.5 KiB each stay well inside the bound of a query's reply.
const INCIDENT_PAGE: usize = 500;

/// What the pass does with an owed follow-up, from its lease.
enum Verdict {
    /// Another worker's live lease holds it.
    Leased,
    /// Its work failed for good; its incident is open.
    FailedOpen,
    /// Its work failed for good and its incident was resolved: run it again.
    Resolved,
    /// Nobody holds it: claim it.
    Free,
}

impl Reconciler {
    /// One pass over the follow-ups with work: the `overdue` markers and those whose lease was
    /// handed back or failed.
    pub(super) async fn work_pass(
        &mut self,
        overdue: Vec<FoundMarker>,
    ) -> Result<PassSummary, EngineError> {
        let (owed, leases) = self.owed_with_leases(overdue).await?;
        let now_ms = unix_ms();
        let failed = owed.iter().filter(|found| {
            leases
                .get(&found.instance)
                .is_some_and(|lease| is_failed_for(lease, &found.marker))
        });
        let mut summary = PassSummary {
            overdue: owed.len(),
            failed_work: failed.clone().count(),
            ..PassSummary::default()
        };
        let open = if summary.failed_work > 0 {
            self.open_incidents_for(failed.clone()).await?
        } else {
            HashMap::new()
        };
        for found in failed {
            let task_id = found.marker.task_id();
            if let Some(ids) = open.get(task_id).filter(|ids| ids.len() > 1) {
                self.follow_ups.keep_first_of(task_id, ids.clone()).await;
            }
        }
        let mut example = None;
        for found in &owed {
            let (marker, instance) = (&found.marker, &found.instance);
            let verdict = verdict(leases.get(instance), marker, &open, now_ms);
            if matches!(verdict, Verdict::Leased | Verdict::FailedOpen) {
                summary.skipped += 1;
                continue;
            }
            let claimed = self.run_again(marker, instance).await;
            if let Err(e) = self.count_claim(claimed, &verdict, found, &mut summary) {
                debug!("cannot claim an owed follow-up yet: {e}");
                summary.failed += 1;
                example.get_or_insert_with(|| {
                    format!(
                        "process instance {instance}, task {}: {e}",
                        marker.task_id()
                    )
                });
            }
        }
        report_undelivered(&summary, example);
        Ok(summary)
    }

    /// The open incidents of the follow-ups' type, by the task id they name, as far as the
    /// `failed` works need them: every open one in one query while they fit a page of
    /// [`INCIDENT_PAGE`]; beyond that, those of each failed work's instance, one query each. A
    /// reply with every open incident would outgrow the bound of a query's reply (an incident
    /// carries up to 3,900 characters of its cause) and fail the whole pass.
    async fn open_incidents_for(
        &self,
        failed: impl Iterator<Item = &FoundMarker>,
    ) -> Result<HashMap<String, Vec<String>>, EngineError> {
        self.follow_ups.spend_budget().await;
        let page = self
            .client
            .open_incidents_of(INCIDENT_TYPE, INCIDENT_PAGE + 1)
            .await?;
        if page.len() <= INCIDENT_PAGE {
            return Ok(incidents_by_task(page));
        }
        let mut open = Vec::new();
        for instance in failed.map(|found| &found.instance) {
            self.follow_ups.spend_budget().await;
            open.extend(
                self.client
                    .open_incidents_of_instance(INCIDENT_TYPE, instance)
                    .await?,
            );
        }
        Ok(incidents_by_task(open))
    }

    /// Counts how a claim of `found` ended in `summary`; the error of one that failed.
    fn count_claim(
        &self,
        claimed: Result<bool, EngineError>,
        verdict: &Verdict,
        found: &FoundMarker,
        summary: &mut PassSummary,
    ) -> Result<(), EngineError> {
        match (claimed?, verdict) {
            (true, Verdict::Resolved) => {
                summary.rerun += 1;
                let task_id = found.marker.task_id();
                info!(process_instance_id = %found.instance, task_id, "the incident of a failed follow-up work was resolved: running the work again");
            }
            (true, _) => {
                summary.recovered += 1;
                self.count_recovered();
            }
            (false, _) => summary.skipped += 1,
        }
        Ok(())
    }

    /// The owed follow-ups this pass looks at — the `overdue` markers, and the markers still
    /// owed for a lease handed back or failed — none of them in this worker's hands, each with
    /// the lease of its instance (if any).
    async fn owed_with_leases(
        &self,
        overdue: Vec<FoundMarker>,
    ) -> Result<(Vec<FoundMarker>, HashMap<String, Marker>), EngineError> {
        let lease_variable = self.follow_ups.policy().lease_variable();
        let marker_variable = self.follow_ups.policy().marker_variable.clone();
        let mut leases = HashMap::new();
        for (from, to) in [handed_back_range(&self.topic), failed_range(&self.topic)] {
            for found in self.markers_in(&lease_variable, &from, &to).await? {
                leases.insert(found.instance, found.marker);
            }
        }
        let mut owed: HashMap<String, FoundMarker> = overdue
            .into_iter()
            .map(|found| (found.instance.clone(), found))
            .collect();
        let unread: Vec<&str> = leases
            .keys()
            .filter(|instance| !owed.contains_key(*instance))
            .map(String::as_str)
            .collect();
        for found in self.markers_of(&marker_variable, &unread).await? {
            if matches!(found.marker, Marker::Owed { .. }) {
                owed.insert(found.instance.clone(), found);
            }
        }
        owed.retain(|_, found| !self.follow_ups.is_pending(found.marker.task_id()));
        let unread: Vec<&str> = owed
            .keys()
            .filter(|instance| !leases.contains_key(*instance))
            .map(String::as_str)
            .collect();
        let read = self.markers_of(&lease_variable, &unread).await?;
        leases.extend(read.into_iter().map(|found| (found.instance, found.marker)));
        let mut owed: Vec<FoundMarker> = owed.into_values().collect();
        owed.sort_by_cached_key(|found| found.marker.to_string());
        Ok((owed, leases))
    }
}

/// What the pass does with the follow-up `owed`, from its instance's `lease`, the open incidents
/// and the engine's time.
fn verdict(
    lease: Option<&Marker>,
    owed: &Marker,
    open: &HashMap<String, Vec<String>>,
    now_ms: u64,
) -> Verdict {
    match lease {
        Some(lease) if is_failed_for(lease, owed) => {
            if open.contains_key(owed.task_id()) {
                Verdict::FailedOpen
            } else {
                Verdict::Resolved
            }
        }
        Some(lease) if lease.holds(owed, now_ms) => Verdict::Leased,
        _ => Verdict::Free,
    }
}

/// The `open` incidents' ids, (configuration, id), by the task id their configuration names.
fn incidents_by_task(open: Vec<(String, String)>) -> HashMap<String, Vec<String>> {
    let mut by_task: HashMap<String, Vec<String>> = HashMap::new();
    for (configuration, id) in open {
        let task_id = incident_task_id(&configuration).to_owned();
        by_task.entry(task_id).or_default().push(id);
    }
    by_task
}

/// Whether `lease` says the work of the follow-up `owed` failed for good.
fn is_failed_for(lease: &Marker, owed: &Marker) -> bool {
    matches!(lease, Marker::Failed { .. }) && lease.task_id() == owed.task_id()
}
