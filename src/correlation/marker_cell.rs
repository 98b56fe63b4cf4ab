//! A follow-up's marker as the engine holds it now, shared between the work's lease renewal and
//! the delivery.

use std::sync::Arc;

use crate::ledger::Marker;

/// A follow-up's marker as the engine holds it now. With work, the lease renewal moves its due
/// time; the lock keeps a renewal and a message from crossing, so that a message always names the
/// value the engine has.
#[derive(Debug, Clone)]
pub(crate) struct MarkerCell(Arc<tokio::sync::Mutex<MarkerState>>);

#[derive(Debug)]
pub(crate) struct MarkerState {
    /// The value the engine has (as far as this worker knows).
    pub(super) current: Marker,
    /// A value written whose reply was lost: the engine may have it instead.
    pub(super) maybe: Option<Marker>,
}

impl MarkerCell {
    pub(super) fn new(marker: Marker) -> Self {
        MarkerCell(Arc::new(tokio::sync::Mutex::new(MarkerState {
            current: marker,
            maybe: None,
        })))
    }

    pub(super) async fn lock(&self) -> tokio::sync::MutexGuard<'_, MarkerState> {
        self.0.lock().await
    }
}

impl MarkerState {
    /// Whether `value` (as read from the engine) is this follow-up's own marker; a value whose
    /// write's reply was lost becomes the current one.
    pub(super) fn is_ours(&mut self, value: &Marker) -> bool {
        if *value == self.current {
            return true;
        }
        if self.maybe.as_ref() == Some(value) {
            self.current = value.clone();
            self.maybe = None;
            return true;
        }
        false
    }
}
