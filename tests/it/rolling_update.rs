//! A rolling update runs the previous release and this build side by side, and either may die
//! with follow-ups owed: the markers one release wrote must be recovered by the other and
//! delivered exactly once. The previous release is a real binary of it
//! ([`crate::support::previous_release`]); the scenario is `ledger.rs`'s kill -9, with one
//! release killed and the other recovering, judged by the engine's runtime state and the
//! recovering worker's own metrics.

use crate::ledger::{owed_follow_ups_outlive_a_kill_9, Spawn};
use crate::support::WorkerProcess;

const PREVIOUS: Spawn = WorkerProcess::spawn_previous_release;
const THIS: Spawn = WorkerProcess::spawn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_the_previous_release_wrote_are_recovered_by_this_build_exactly_once() {
    owed_follow_ups_outlive_a_kill_9("full", "rolling_upgrade", 40, PREVIOUS, THIS).await;
}

/// The way back (an update rolled back), at history level `audit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_this_build_wrote_are_recovered_by_the_previous_release_exactly_once() {
    owed_follow_ups_outlive_a_kill_9("audit", "rolling_back", 40, THIS, PREVIOUS).await;
}
