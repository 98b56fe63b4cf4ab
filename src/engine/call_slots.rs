//! How many calls the worker has open against the engine at once: at most [`CALL_SLOTS`], the
//! long polls of fetch-and-lock aside.
//!
//! The worker's calls come from limits of their own: up to `--max-tasks` completions, 32 message
//! sends with their marker reads, lock extensions and leases, and the reconciler's queries. At
//! the defaults these add up to about a hundred while a backlog drains. Each call in flight costs
//! on both sides:
//!
//! - In the worker, it holds a kept-alive connection: its read and write buffers and hyper's
//!   dispatch channel, about 40 KB. The connections were the largest part of the worker's peak
//!   memory (BENCHMARKS.md, "Memory").
//! - In the engine, it holds one of the request threads. Tomcat has 200 by default, shared by
//!   every client and every replica.
//!
//! The engine cannot work on more calls at once than its cores and its database allow. Past that,
//! more calls only wait in its threads. So every call takes one of the slots first, and gives it
//! back once its reply is read. The wait for a slot is not part of the call's timeout.
//!
//! Fetch-and-lock takes no slot. A long poll parks in the engine for up to `--long-poll` with no
//! work to do, one per node, and it must not keep a completion from being sent.
//!
//! Slots are handed out in the order they were asked for (tokio's semaphore is fair): a
//! completion waits behind the calls that were there first, never behind a stream of later ones.

use tokio::sync::{Semaphore, SemaphorePermit};

use super::endpoint::Endpoint;

/// The most calls one worker has open against the engine at once, fetch-and-lock aside. Three
/// replicas then hold at most 96 of Tomcat's 200 request threads. Measured against the unbounded
/// calls, a backlog drained no slower (within the spread between rounds) and the peak memory was
/// 1.8 MiB lower (BENCHMARKS.md, "Memory").
pub const CALL_SLOTS: usize = 32;

/// The slots the calls of one client share (over all nodes).
#[derive(Debug)]
pub(super) struct CallSlots {
    slots: Semaphore,
}

impl CallSlots {
    pub(super) fn new(slots: usize) -> Self {
        CallSlots {
            slots: Semaphore::new(slots),
        }
    }

    /// Waits for a slot for a call of `endpoint`; a fetch-and-lock needs none.
    pub(super) async fn take(&self, endpoint: Endpoint) -> Option<SemaphorePermit<'_>> {
        if endpoint == Endpoint::FetchAndLock {
            return None;
        }
        // The semaphore is never closed, so acquiring cannot fail.
        self.slots.acquire().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_call_waits_for_a_slot_once_every_slot_is_taken() {
        let slots = CallSlots::new(2);
        let first = slots.take(Endpoint::Complete).await;
        let _second = slots.take(Endpoint::Message).await;
        let third = tokio::time::timeout(Duration::from_millis(50), slots.take(Endpoint::Complete));
        assert!(third.await.is_err(), "a third call got a slot of two");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), slots.take(Endpoint::Complete));
        assert!(third.await.expect("a freed slot").is_some());
    }

    #[tokio::test]
    async fn a_long_poll_takes_no_slot() {
        let slots = CallSlots::new(1);
        let _taken = slots.take(Endpoint::Complete).await;
        let poll = tokio::time::timeout(Duration::from_secs(5), slots.take(Endpoint::FetchAndLock));
        assert!(poll.await.expect("a long poll waited for a slot").is_none());
    }
}
