//! The rules of one follow-up's delivery, pinned under tokio's paused clock against a scripted
//! engine ([`super::super::fake`]): when a mismatch reads the marker, what a retry spends, the
//! backoff and the timeout, when a follow-up is due, how long a hold or a give-up keeps the
//! reconciler away.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::super::fake::{self, Call, FakeLedger};
use super::super::{
    CorrelationPolicy, Delivery, FollowUp, FollowUpMessage, FollowUps, GiveUpReason,
};
use crate::ledger::Marker;
use crate::variables::Variables;
use crate::work::Delay;

fn scheduler(timeout: Duration) -> FollowUps {
    let policy = CorrelationPolicy {
        timeout,
        max_backoff: Duration::from_secs(1),
        ..CorrelationPolicy::default()
    };
    let follow_ups = fake::follow_ups(policy, FollowUpMessage::default(), Arc::new(Delay));
    // The fake engine answers no diagnosis.
    let far = Instant::now() + Duration::from_secs(86_400);
    follow_ups.route.diagnosis.hold_off(far);
    follow_ups
}

async fn deliver(follow_ups: &FollowUps, ledger: &FakeLedger, f: &FollowUp) -> Delivery {
    let none = Variables::new();
    follow_ups.deliver_via(ledger, f, &none, None).await
}

fn correlate(f: &FollowUp) -> Call {
    Call::Correlate(f.marker.to_string())
}

#[tokio::test(start_paused = true)]
async fn a_mismatch_is_decided_by_a_marker_read_at_the_first_and_every_fourth_after_the_message() {
    let follow_ups = scheduler(Duration::from_secs(300));
    let f = fake::follow_up("task-1", Some("pi-1"), Duration::from_secs(60));
    let ledger = FakeLedger::holding(&f.marker);
    let mut replies: Vec<_> = (0..9).map(|_| Err(fake::no_match())).collect();
    replies.push(Ok(()));
    ledger.answer_messages(replies);

    assert_eq!(deliver(&follow_ups, &ledger, &f).await, Delivery::Sent);

    let c = || correlate(&f);
    let expected = vec![
        c(),
        Call::Read,
        c(),
        c(),
        c(),
        c(),
        Call::Read,
        c(),
        c(),
        c(),
        c(),
        Call::Read,
        c(),
    ];
    assert_eq!(ledger.kinds(), expected);
    // The first message and the read that decides its mismatch are free; the 9 retries and
    // the 2 later reads each spent one request of the budget.
    assert_eq!(follow_ups.inner.metrics.retry_budget_spent.get(), 11);
}

#[tokio::test(start_paused = true)]
async fn a_mismatch_after_a_lost_reply_reads_the_marker_out_of_turn() {
    let follow_ups = scheduler(Duration::from_secs(300));
    let f = fake::follow_up("task-1", Some("pi-1"), Duration::from_secs(60));
    let ledger = FakeLedger::holding(&f.marker);
    ledger.answer_messages(vec![
        Err(fake::no_match()),
        Err(fake::reply_lost()),
        Err(fake::no_match()),
        Err(fake::no_match()),
        Ok(()),
    ]);

    assert_eq!(deliver(&follow_ups, &ledger, &f).await, Delivery::Sent);

    let c = || correlate(&f);
    // Mismatch 1: read (the first). The lost reply, then mismatch 2: read (the message may
    // have gone through). Mismatch 3: not read (neither first, nor lost, nor every fourth).
    let expected = vec![c(), Call::Read, c(), c(), Call::Read, c(), c()];
    assert_eq!(ledger.kinds(), expected);
}

#[tokio::test(start_paused = true)]
async fn a_read_that_finds_the_marker_delivered_counts_the_follow_up_as_delivered() {
    let follow_ups = scheduler(Duration::from_secs(300));
    let f = fake::follow_up("task-1", Some("pi-1"), Duration::from_secs(60));
    let ledger = FakeLedger::holding(&f.marker.delivered());

    let delivery = deliver(&follow_ups, &ledger, &f).await;

    assert_eq!(delivery, Delivery::AlreadyDelivered);
    assert_eq!(ledger.kinds(), vec![correlate(&f), Call::Read]);
    assert_eq!(
        ledger.calls()[1].0,
        Duration::ZERO,
        "read at once, no backoff"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_and_the_follow_up_is_given_up_once_the_timeout_is_over() {
    let timeout = Duration::from_secs(10);
    let follow_ups = scheduler(timeout);
    // Known by business key only: no marker to read, every mismatch is "not waiting".
    let f = fake::follow_up("task-1", None, Duration::from_secs(60));
    let ledger = FakeLedger::holding(&f.marker);

    let delivery = deliver(&follow_ups, &ledger, &f).await;

    assert_eq!(delivery, Delivery::GivenUp(GiveUpReason::Timeout));
    let times: Vec<Duration> = ledger.calls().into_iter().map(|(at, _)| at).collect();
    assert!(ledger.kinds().iter().all(|call| *call == correlate(&f)));
    assert_eq!(times[0], Duration::ZERO, "the first attempt goes at once");
    // Each wait is drawn from the upper half of its step: 200 ms doubling up to the 1 s cap.
    for (n, pair) in times.windows(2).enumerate() {
        let step = Duration::from_millis(200 << n.min(3)).min(Duration::from_secs(1));
        let wait = pair[1] - pair[0];
        assert!(
            wait >= step / 2 && wait <= step,
            "wait {n} was {wait:?}, step {step:?}"
        );
    }
    // Given up right after the first attempt that ended past the timeout, not before.
    let (last, before) = (times[times.len() - 1], times[times.len() - 2]);
    assert!(before < timeout && last >= timeout, "{before:?}, {last:?}");
    assert_eq!(
        follow_ups.inner.metrics.follow_ups_retried.get(),
        times.len() as u64 - 1
    );
}

#[tokio::test(start_paused = true)]
async fn a_follow_up_given_up_is_left_to_this_workers_reconciler_for_ten_minutes() {
    let follow_ups = scheduler(Duration::from_secs(1));
    let f = fake::follow_up("task-1", None, Duration::from_secs(60));
    let ledger = FakeLedger::holding(&f.marker);
    assert!(!follow_ups.is_pending("task-1"));

    deliver(&follow_ups, &ledger, &f).await;

    let given_up = Instant::now();
    assert!(follow_ups.is_pending("task-1"));
    tokio::time::sleep_until(
        given_up + super::super::RETRY_GIVEN_UP_AFTER - Duration::from_millis(1),
    )
    .await;
    assert!(follow_ups.is_pending("task-1"));
    tokio::time::sleep_until(given_up + super::super::RETRY_GIVEN_UP_AFTER).await;
    assert!(!follow_ups.is_pending("task-1"));
}

#[tokio::test(start_paused = true)]
async fn a_held_follow_up_is_the_workers_own_until_released() {
    let follow_ups = scheduler(Duration::from_secs(1));
    follow_ups.hold("task-1");
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(follow_ups.is_pending("task-1"), "a hold does not expire");
    follow_ups.release("task-1");
    assert!(!follow_ups.is_pending("task-1"));
}

#[tokio::test(start_paused = true)]
async fn a_follow_up_is_due_the_delay_after_its_completion_or_at_once_on_shutdown() {
    let follow_ups = scheduler(Duration::from_secs(1));
    let f = fake::follow_up("task-1", None, Duration::from_secs(60));
    let due = follow_ups.due(&f);
    assert_eq!(
        due - f.completed_at,
        Duration::from_secs(2),
        "the default delay"
    );

    follow_ups.wait_until_due(due).await;
    assert_eq!(Instant::now(), f.completed_at + Duration::from_secs(2));

    let later = fake::follow_up("task-2", None, Duration::from_secs(60));
    follow_ups.inner.hurry.cancel();
    follow_ups.wait_until_due(follow_ups.due(&later)).await;
    assert_eq!(Instant::now(), later.completed_at, "shutdown sends at once");
}

#[tokio::test(start_paused = true)]
async fn every_route_spends_the_one_worker_wide_budget() {
    let policy = CorrelationPolicy {
        retry_budget: 5,
        ..CorrelationPolicy::default()
    };
    let a = fake::follow_ups(policy, FollowUpMessage::default(), Arc::new(Delay));
    a.add_route("b", FollowUpMessage::default(), Arc::new(Delay));
    let b = a.for_topic("b");
    let start = Instant::now();
    let mut times = Vec::new();
    for n in 0..10 {
        let route = if n % 2 == 0 { &a } else { &b };
        route.spend_budget().await;
        times.push(start.elapsed().as_millis());
    }
    assert_eq!(times, vec![0, 0, 0, 0, 0, 200, 400, 600, 800, 1000]);
    assert_eq!(a.inner.metrics.retry_budget_spent.get(), 10);
}

/// Work that is work (its follow-up holds a lease), and does nothing.
struct Nothing;

impl crate::work::FollowUpWork for Nothing {
    async fn run(
        &self,
        _: &crate::work::CompletedTask,
        _: &tokio_util::sync::CancellationToken,
    ) -> Result<Variables, crate::work::WorkError> {
        Ok(Variables::new())
    }
}

#[tokio::test(start_paused = true)]
async fn a_reconciler_may_take_a_marker_over_after_the_delay_and_grace_or_once_the_lease_ran_out() {
    let policy = CorrelationPolicy {
        lease: Duration::from_secs(60),
        ..CorrelationPolicy::default()
    };
    let message = FollowUpMessage {
        delay: Duration::from_secs(2),
        ..FollowUpMessage::default()
    };
    let plain = fake::follow_ups(policy.clone(), message.clone(), Arc::new(Delay));
    assert_eq!(plain.recovery_due(), Duration::from_secs(2 + 10));
    let with_work = fake::follow_ups(policy, message, Arc::new(Nothing));
    assert_eq!(with_work.recovery_due(), Duration::from_secs(60));
    let Marker::Owed { due_ms, .. } = with_work.owed_marker("t", "task-1") else {
        panic!("complete sets an owed marker");
    };
    let now = crate::ledger::unix_ms();
    assert!(
        due_ms > now + 59_000 && due_ms <= now + 60_000,
        "{due_ms} vs {now}"
    );
}

#[tokio::test]
async fn a_delivery_keeps_its_calls_state_boxed_so_that_a_waiting_one_is_small() {
    let follow_ups = scheduler(Duration::from_secs(300));
    let f = fake::follow_up("task-1", Some("pi-1"), Duration::from_secs(60));
    let none = Variables::new();
    let delivery = follow_ups.deliver_due(&f, &none, None);
    let size = std::mem::size_of_val(&delivery);
    assert!(
        size <= fake::WAITING_DELIVERY_BOUND,
        "a delivery's future is {size} bytes"
    );
}

#[tokio::test]
async fn a_follow_up_with_work_keeps_its_calls_state_boxed_so_that_a_waiting_one_is_small() {
    // Measured at 6992c6b: 5,800 bytes, held from the completion on; 1,072 since.
    let follow_ups = scheduler(Duration::from_secs(300));
    let f = fake::follow_up("task-1", Some("pi-1"), Duration::from_secs(60));
    let pipeline = follow_ups.work_then_deliver(&f, follow_ups.due(&f));
    let size = std::mem::size_of_val(&pipeline);
    assert!(
        size <= fake::WAITING_DELIVERY_BOUND,
        "a follow-up's work and delivery future is {size} bytes"
    );
}
