//! Admission: which tasks the worker may lock before it asks the engine for them.
//!
//! Never lock what you cannot start: a fetch first takes a free slot (one per task in flight,
//! over all engine nodes) and room for the task's follow-up, asks the engine for exactly that
//! many tasks, and moves one of each into every task it starts. When the follow-ups are at
//! capacity, fetching waits (and says so once), so undeliverable messages cannot grow memory.
//!
//! How many of the `--max-tasks` slots may be taken at once is the adaptive limit's to say
//! ([`super::concurrency`]); [`SlotLimit`] keeps the slots above it back, and takes back each slot
//! a task gives up while more are in flight than a lowered limit allows.
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

use super::slot_limit::{Slot, SlotLimit};
use crate::metrics::Metrics;

/// Under saturation, how long a fetch waits for more slots to come free: a few engine round
/// trips, nothing a waiting task would notice.
const BATCH_LINGER: Duration = Duration::from_millis(20);

/// What a task takes before it is fetched: a slot (a task in flight) and room for its follow-up.
pub(crate) struct Permits {
    pub(crate) slot: Slot,
    pub(crate) room: OwnedSemaphorePermit,
}

/// The slots and the follow-up room every poll draws from.
pub(crate) struct Admission {
    /// One permit per task in flight, over all nodes.
    slots: Arc<Semaphore>,
    /// How many of the slots may be taken now.
    pub(crate) limit: Arc<SlotLimit>,
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
    /// `max_tasks` slots, of which an `adaptive` limit lets as many be taken as the engine's
    /// answers show room for; `room` for pending follow-ups (`capacity` of them).
    pub(crate) fn new(
        max_tasks: usize,
        adaptive: bool,
        room: Arc<Semaphore>,
        capacity: usize,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(max_tasks));
        Admission {
            limit: Arc::new(SlotLimit::new(Arc::clone(&slots), max_tasks, adaptive)),
            slots,
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
            permit = Arc::clone(&self.slots).acquire_owned() => self.slot(permit.ok()?),
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
            share.min((self.limit.current() / 2).max(1))
        } else {
            1
        };
        let linger_until = Instant::now() + BATCH_LINGER;
        while permits.len() < share {
            let slot = match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(slot) => self.slot(slot),
                Err(_) if permits.len() < target => {
                    match tokio::time::timeout_at(
                        linger_until,
                        Arc::clone(&self.slots).acquire_owned(),
                    )
                    .await
                    {
                        Ok(Ok(slot)) => self.slot(slot),
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

    fn slot(&self, permit: OwnedSemaphorePermit) -> Slot {
        Slot::new(permit, Arc::clone(&self.limit))
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

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_TASKS: usize = 4;

    /// Admission with `MAX_TASKS` slots and room for `room` follow-ups.
    fn admission(room: usize) -> Admission {
        Admission::new(MAX_TASKS, false, Arc::new(Semaphore::new(room)), room)
    }

    fn free(admission: &Admission) -> (usize, usize) {
        (
            admission.slots.available_permits(),
            admission.room.available_permits(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_takes_a_slot_and_room_per_task_up_to_its_share_and_gives_both_back() {
        let admission = admission(10);
        let (shutdown, metrics) = (CancellationToken::new(), Metrics::new());
        let started = Instant::now();
        let permits = admission
            .take(3, false, &shutdown, &metrics)
            .await
            .expect("free slots");
        assert_eq!(permits.len(), 3);
        assert_eq!(free(&admission), (1, 7));
        let all = admission
            .take(usize::MAX, false, &shutdown, &metrics)
            .await
            .expect("one slot left");
        assert_eq!(all.len(), 1, "never more than the free slots");
        assert_eq!(started.elapsed(), Duration::ZERO, "nothing waited");
        drop(permits);
        drop(all);
        assert_eq!(free(&admission), (MAX_TASKS, 10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_takes_no_more_tasks_than_there_is_room_for_follow_ups() {
        let admission = admission(2);
        let (shutdown, metrics) = (CancellationToken::new(), Metrics::new());
        let permits = admission
            .take(usize::MAX, false, &shutdown, &metrics)
            .await
            .expect("room for two");
        assert_eq!(permits.len(), 2);
        assert_eq!(free(&admission), (2, 0), "the third slot is not kept");
    }

    #[tokio::test(start_paused = true)]
    async fn without_room_fetching_pauses_until_a_follow_up_gives_its_room_back() {
        let admission = admission(1);
        let (shutdown, metrics) = (CancellationToken::new(), Metrics::new());
        let held = admission
            .take(1, false, &shutdown, &metrics)
            .await
            .expect("room for one");
        let started = Instant::now();
        let waiting = admission.take(1, false, &shutdown, &metrics);
        let freeing = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(metrics.fetch_paused.get(), 1, "paused while it waits");
            drop(held);
        };
        let (permits, ()) = tokio::join!(waiting, freeing);
        let permits = permits.expect("room again");
        assert_eq!(permits.len(), 1);
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        assert_eq!(metrics.fetch_paused.get(), 0, "resumed");
        assert_eq!(free(&admission), (MAX_TASKS - 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_while_waiting_for_room_gives_the_slot_back() {
        let admission = admission(1);
        let (shutdown, metrics) = (CancellationToken::new(), Metrics::new());
        let _held = admission
            .take(1, false, &shutdown, &metrics)
            .await
            .expect("room for one");
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(40)).await;
            stop.cancel();
        });
        let started = Instant::now();
        assert!(admission
            .take(1, false, &shutdown, &metrics)
            .await
            .is_none());
        assert_eq!(started.elapsed(), Duration::from_millis(40));
        assert_eq!(free(&admission), (MAX_TASKS - 1, 0), "only the held task's");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_while_every_slot_is_busy_takes_nothing() {
        let admission = admission(10);
        let (shutdown, metrics) = (CancellationToken::new(), Metrics::new());
        let _busy = admission
            .take(MAX_TASKS, false, &shutdown, &metrics)
            .await
            .expect("every slot");
        shutdown.cancel();
        assert!(admission
            .take(1, false, &shutdown, &metrics)
            .await
            .is_none());
        assert_eq!(free(&admission), (0, 10 - MAX_TASKS));
    }

    #[tokio::test(start_paused = true)]
    async fn under_saturation_a_fetch_lingers_briefly_for_half_the_slots() {
        let admission = admission(10);
        let (shutdown, metrics) = (CancellationToken::new(), Metrics::new());
        let mut busy = admission
            .take(MAX_TASKS, false, &shutdown, &metrics)
            .await
            .expect("every slot");
        // One slot frees now, a second 10 ms later: the fetch waits for it (half of 4 slots).
        busy.pop();
        let started = Instant::now();
        let freeing = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            busy.pop();
        };
        let (permits, ()) = tokio::join!(
            admission.take(usize::MAX, true, &shutdown, &metrics),
            freeing
        );
        assert_eq!(permits.expect("two slots").len(), 2);
        assert_eq!(started.elapsed(), Duration::from_millis(10));

        // No second slot comes free: the fetch goes with one after the linger.
        let admission = self::admission(10);
        let mut busy = admission
            .take(MAX_TASKS, false, &shutdown, &metrics)
            .await
            .expect("every slot");
        busy.pop();
        let started = Instant::now();
        let permits = admission
            .take(usize::MAX, true, &shutdown, &metrics)
            .await
            .expect("one slot");
        assert_eq!(permits.len(), 1);
        assert_eq!(started.elapsed(), BATCH_LINGER);

        // Without saturation it does not linger.
        drop(permits);
        let started = Instant::now();
        let permits = admission
            .take(usize::MAX, false, &shutdown, &metrics)
            .await
            .expect("one slot");
        assert_eq!((permits.len(), started.elapsed()), (1, Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_waits_while_another_is_saturated_and_goes_on_when_none_is() {
        let saturation = Saturation::default();
        let (a, b) = (CancellationToken::new(), CancellationToken::new());
        let started = Instant::now();
        assert!(saturation.wait_until_none([&a, &b]).await);
        assert_eq!(started.elapsed(), Duration::ZERO, "none saturated: no wait");

        saturation.set("n1", true);
        let clearing = async {
            tokio::time::sleep(Duration::from_millis(70)).await;
            saturation.set("n1", false);
        };
        let (went_on, ()) = tokio::join!(saturation.wait_until_none([&a, &b]), clearing);
        assert!(went_on);
        assert_eq!(started.elapsed(), Duration::from_millis(70));

        saturation.set("n2", true);
        b.cancel();
        assert!(!saturation.wait_until_none([&a, &b]).await, "stopped");
        assert_eq!(started.elapsed(), Duration::from_millis(70));
    }
}
