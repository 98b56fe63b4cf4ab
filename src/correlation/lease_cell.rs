//! A follow-up's lease as the engine holds it, shared between the work's lease renewal and the
//! writes that end it (failed, handed back), so that they never cross.

use std::sync::Arc;

use crate::ledger::Marker;

/// A follow-up's lease (see [`crate::ledger`]) as this worker last wrote it. The lock keeps a
/// renewal from landing after the failed mark or the hand-back that ends the lease.
#[derive(Debug, Clone)]
pub(crate) struct LeaseCell(Arc<tokio::sync::Mutex<LeaseState>>);

#[derive(Debug)]
pub(super) struct LeaseState {
    /// The follow-up: the marker its task's `complete` wrote.
    pub(super) owed: Marker,
    /// The lease this worker wrote that the engine has (as far as it knows); `None` until it
    /// writes one — the marker's own due time is the first lease.
    pub(super) current: Option<Marker>,
    /// A lease written whose reply was lost: the engine may have it instead.
    pub(super) maybe: Option<Marker>,
}

impl LeaseCell {
    /// The lease of the follow-up `owed`; `claimed` is the lease a reconciler wrote when it took
    /// the follow-up over.
    pub(super) fn new(owed: Marker, claimed: Option<Marker>) -> Self {
        LeaseCell(Arc::new(tokio::sync::Mutex::new(LeaseState {
            owed,
            current: claimed,
            maybe: None,
        })))
    }

    pub(super) async fn lock(&self) -> tokio::sync::MutexGuard<'_, LeaseState> {
        self.0.lock().await
    }
}

impl LeaseState {
    /// Whether the lease `read` from the engine is this worker's to renew. Before it wrote one:
    /// none, or an old round's (another task's). After: the one it wrote — a lease whose write's
    /// reply was lost becomes the current one. Anything else on this task is another worker's
    /// (it took the follow-up over) or ends the lease (failed).
    pub(super) fn is_ours(&mut self, read: Option<&Marker>) -> bool {
        let Some(mine) = &self.current else {
            return !matches!(read, Some(lease) if lease.task_id() == self.owed.task_id());
        };
        let Some(read) = read else {
            return false;
        };
        if read == mine {
            return true;
        }
        if self.maybe.as_ref() == Some(read) {
            self.current = self.maybe.take();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_lease_is_ours_before_we_wrote_one_only_if_no_other_worker_wrote_one_for_this_task() {
        let owed = Marker::owed("t", "task-2", Duration::ZERO);
        let cell_state = |current| LeaseState {
            owed: owed.clone(),
            current,
            maybe: None,
        };
        let old_round = Marker::owed("t", "task-1", Duration::from_secs(60));
        let other_worker = Marker::owed("t", "task-2", Duration::from_secs(60));
        assert!(cell_state(None).is_ours(None));
        assert!(cell_state(None).is_ours(Some(&old_round)));
        assert!(!cell_state(None).is_ours(Some(&other_worker)));
        let mine = Marker::owed("t", "task-2", Duration::from_secs(30));
        assert!(cell_state(Some(mine.clone())).is_ours(Some(&mine)));
        assert!(!cell_state(Some(mine.clone())).is_ours(Some(&other_worker)));
        assert!(!cell_state(Some(mine.clone())).is_ours(None));
        let mut lost_reply = cell_state(Some(mine));
        lost_reply.maybe = Some(other_worker.clone());
        assert!(lost_reply.is_ours(Some(&other_worker)));
        assert_eq!(lost_reply.current, Some(other_worker));
    }
}
