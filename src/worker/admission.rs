//! Admission: which tasks the worker may lock before it asks the engine for them.
//!
//! Never lock what you cannot start: a fetch first takes a free slot (one per task in flight,
//! over all engine nodes) and room for the task's follow-up, asks the engine for exactly that
//! many tasks, and moves one of each into every task it starts. When the follow-ups are at
//! capacity, fetching waits (and says so once), so undeliverable messages cannot grow memory.
//!
//! With several engine nodes, [`Saturation`] tells the polls apart: under a backlog one node's
//! large fetches serve best (any node can lock any task of the shared database), so the other
//! nodes wait instead of parking polls that would hold slots and split the batches.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// Under saturation, how long a fetch waits for more slots to come free: a few engine round
/// trips, nothing a waiting task would notice.
const BATCH_LINGER: Duration = Duration::from_millis(20);

/// What a task takes before it is fetched: a slot (a task in flight) and room for its follow-up.
pub(crate) struct Permits {
    pub(crate) slot: OwnedSemaphorePermit,
    pub(crate) room: OwnedSemaphorePermit,
}

/// The slots and the follow-up room every poll draws from.
pub(crate) struct Admission {
    /// One permit per task in flight, over all nodes.
    slots: Arc<Semaphore>,
    /// The configured number of slots (the most one fetch asks for).
    max_tasks: usize,
    /// Room for pending follow-ups, shared with [`crate::correlation::FollowUps`].
    room: Arc<Semaphore>,
    /// How many follow-ups the room holds (for the log line).
    capacity: usize,
    /// Whether fetching is paused for lack of room for follow-ups (logged once per pause).
    paused: AtomicBool,
    /// Which nodes' last poll filled every slot it asked for.
    pub(crate) saturation: Saturation,
}

impl Admission {
    pub(crate) fn new(max_tasks: usize, room: Arc<Semaphore>, capacity: usize) -> Self {
        Admission {
            slots: Arc::new(Semaphore::new(max_tasks)),
            max_tasks,
            room,
            capacity,
            paused: AtomicBool::new(false),
            saturation: Saturation::default(),
        }
    }

    /// Waits for one free slot and room for one follow-up, then takes as many more of both as
    /// are free, up to `share`. Under saturation (`gather`), lingers a moment for half the slots
    /// to come free: fewer, larger fetches cost the engine less than one fetch per freed slot.
    /// `None` when `shutdown` was cancelled first.
    pub(crate) async fn take(
        &self,
        share: usize,
        gather: bool,
        shutdown: &CancellationToken,
        metrics: &Metrics,
    ) -> Option<Vec<Permits>> {
        let slot = tokio::select! {
            permit = Arc::clone(&self.slots).acquire_owned() => permit.ok()?,
            _ = shutdown.cancelled() => return None,
        };
        let room = match Arc::clone(&self.room).try_acquire_owned() {
            Ok(room) => room,
            Err(_) => {
                self.pause(true, metrics);
                let room = tokio::select! {
                    permit = Arc::clone(&self.room).acquire_owned() => permit.ok()?,
                    _ = shutdown.cancelled() => return None,
                };
                self.pause(false, metrics);
                room
            }
        };
        let mut permits = vec![Permits { slot, room }];
        let target = if gather {
            share.min((self.max_tasks / 2).max(1))
        } else {
            1
        };
        let linger_until = Instant::now() + BATCH_LINGER;
        while permits.len() < share {
            let slot = match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) if permits.len() < target => {
                    match tokio::time::timeout_at(
                        linger_until,
                        Arc::clone(&self.slots).acquire_owned(),
                    )
                    .await
                    {
                        Ok(Ok(slot)) => slot,
                        _ => break,
                    }
                }
                Err(_) => break,
            };
            let Ok(room) = Arc::clone(&self.room).try_acquire_owned() else {
                break;
            };
            permits.push(Permits { slot, room });
        }
        Some(permits)
    }

    /// Records (and logs once) that fetching waits for room among the pending follow-ups.
    fn pause(&self, paused: bool, metrics: &Metrics) {
        if self.paused.swap(paused, Ordering::Relaxed) == paused {
            return;
        }
        metrics.fetch_paused.set(i64::from(paused));
        if paused {
            warn!(
                capacity = self.capacity,
                "pending follow-ups are at capacity (--max-pending-follow-ups): fetching paused until messages are delivered or given up"
            );
        } else {
            info!("room for follow-ups again: fetching resumed");
        }
    }
}

/// Which engine nodes are saturated (their last poll filled every slot it asked for), with a
/// wake-up for the nodes that wait until none is.
#[derive(Default)]
pub(crate) struct Saturation {
    nodes: Mutex<HashSet<String>>,
    changed: tokio::sync::Notify,
}

impl Saturation {
    pub(crate) fn set(&self, node: &str, saturated: bool) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let changed = if saturated {
            nodes.insert(node.to_owned())
        } else {
            nodes.remove(node)
        };
        drop(nodes);
        if changed {
            self.changed.notify_waiters();
        }
    }

    fn any(&self) -> bool {
        !self
            .nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// While another node's poll fills every slot it asks for, returns only once none does.
    /// Returns `false` when one of `stops` was cancelled first.
    pub(crate) async fn wait_until_none(&self, stops: [&CancellationToken; 2]) -> bool {
        loop {
            // Created before the check, so a change in between is not missed.
            let changed = self.changed.notified();
            if !self.any() {
                return true;
            }
            tokio::select! {
                _ = changed => {}
                _ = stops[0].cancelled() => return false,
                _ = stops[1].cancelled() => return false,
            }
        }
    }
}
