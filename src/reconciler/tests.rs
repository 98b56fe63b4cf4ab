//! Paused-clock unit tests of when the reconciler recovers a marker and when it leaves one alone.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Reconciler, MAX_RETRY_WAIT};
use crate::correlation::{fake, CorrelationPolicy, FollowUpMessage};
use crate::health::Liveness;
use crate::metrics::Metrics;
use crate::work::Delay;

fn reconciler() -> Reconciler {
    let follow_ups = fake::follow_ups(
        CorrelationPolicy::default(),
        FollowUpMessage::default(),
        Arc::new(Delay),
    );
    let metrics = Arc::new(Metrics::new());
    let liveness = Arc::new(Liveness::default());
    Reconciler::new(fake::client(), follow_ups, metrics, liveness, "t")
}

#[tokio::test(start_paused = true)]
async fn an_undelivered_marker_waits_30_s_then_twice_as_long_each_time_up_to_ten_minutes() {
    let mut reconciler = reconciler();
    let mut waits = Vec::new();
    for _ in 0..7 {
        let failed = Instant::now();
        reconciler.retry_later("task-1", failed);
        let mut wait = Duration::ZERO;
        while reconciler.leaves_alone("task-1", failed + wait) {
            wait += Duration::from_secs(1);
        }
        assert!(reconciler.leaves_alone("task-1", failed + wait - Duration::from_millis(1)));
        assert!(!reconciler.leaves_alone("other-task", failed));
        waits.push(wait.as_secs());
        tokio::time::sleep(wait).await;
    }
    assert_eq!(waits, vec![30, 60, 120, 240, 480, 600, 600]);
    assert_eq!(MAX_RETRY_WAIT, Duration::from_secs(600));
}

#[tokio::test(start_paused = true)]
async fn a_marker_whose_follow_up_this_worker_holds_is_left_to_it() {
    let reconciler = reconciler();
    reconciler.follow_ups.hold("task-1");
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(reconciler.leaves_alone("task-1", Instant::now()));
    reconciler.follow_ups.release("task-1");
    assert!(!reconciler.leaves_alone("task-1", Instant::now()));
}
