//! Giving back, at shutdown, what the engine holds for this worker.
//!
//! Camunda 7 does not notice that the client of a parked long poll went away: the poll stays
//! parked until its timeout and can still lock new tasks for this worker id, which would then sit
//! locked for a worker that is gone until the lock expires. Where the engine runs with
//! `fetch-and-lock-unique-worker-request=true`, the fetch loop cancels its parked poll (see
//! [`crate::engine::EngineClient::cancel_parked_poll`]) and nothing is left behind. Elsewhere this
//! sweep unlocks every task locked for this worker id that it does not handle itself, again and
//! again until the abandoned poll has timed out — plus a margin, because the engine's single
//! fetch-and-lock thread tries to lock tasks for a pending poll *before* it checks whether the
//! poll has expired, and may come to it late.
//!
//! Every call of the sweep is bounded by the deadline it is given (the end of the shutdown grace).
//!
//! A task this worker does handle is given back by its own run ([`hand_back`]): one fetched after
//! shutdown began, before its handler started; and one whose handler still ran when the grace
//! ran out (the handler is stopped first — a command's whole process group is killed with it).
//! Without the unlock, such a task would wait for its lock to expire, extended as it was for a
//! long handler, before another worker could take it.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::context::WorkerContext;

/// How long after an abandoned poll's timeout the engine may still lock tasks through it (see the
/// module docs). Seen here: tens of milliseconds on an idle engine; the margin covers an engine
/// whose fetch-and-lock thread is busy with other polls.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(2);

/// How long an abandoned task's unlock may take: the drain gives abandoned work this much less
/// than `ABORT_WAIT` (500 ms) after the abort, before the process ends.
const ABANDONED_UNLOCK_WAIT: Duration = Duration::from_millis(400);

/// Pause between two sweeps.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// Unlocks every task the engine holds for this worker id and this worker does not handle, until
/// `until` (at least once), never past `deadline`.
pub(crate) async fn release_locks<H>(ctx: &WorkerContext<H>, until: Instant, deadline: Instant) {
    let client = &ctx.client;
    let worker_id = &ctx.settings.worker_id;
    let mut announced = false;
    loop {
        let listed = tokio::time::timeout_at(deadline, client.locked_tasks(worker_id)).await;
        match listed {
            Err(_) => break,
            Ok(Ok(tasks)) => {
                for task in tasks {
                    if ctx.is_in_flight(&task.id) {
                        continue;
                    }
                    match tokio::time::timeout_at(deadline, client.unlock(&task.id)).await {
                        Ok(Ok(())) => {
                            info!(task_id = %task.id, "unlocked a task the engine locked for this stopping worker")
                        }
                        Ok(Err(e)) => debug!(task_id = %task.id, "could not unlock: {e}"),
                        Err(_) => break,
                    }
                }
            }
            Ok(Err(e)) if e.is_transient() => {
                debug!("cannot list this worker's locked tasks yet: {e}")
            }
            Ok(Err(e)) => {
                debug!("cannot list this worker's locked tasks: {e}");
                return;
            }
        }
        let now = Instant::now();
        if now >= until || now >= deadline {
            break;
        }
        if !announced {
            info!(
                "the engine keeps an abandoned long poll parked for {}s more; releasing what it locks until then (signal again to exit now)",
                (until - now).as_secs()
            );
            announced = true;
        }
        tokio::time::sleep_until((now + SWEEP_INTERVAL).min(until).min(deadline)).await;
    }
    if until > deadline && Instant::now() >= deadline {
        warn!(
            "the shutdown grace ended {}s before the abandoned long poll times out: a task it locks meanwhile waits for its lock to expire (turn on fetch-and-lock-unique-worker-request on the engine, or raise --shutdown-grace above --long-poll)",
            (until - deadline).as_secs()
        );
    }
}

/// Why a task this worker handles goes back to the engine unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandBack {
    /// Fetched after shutdown began: never started.
    NotStarted,
    /// The shutdown grace ran out while its handler ran: the handler was stopped.
    Abandoned,
}

/// Unlocks `task_id` so that the next worker takes it at once; the unlock of an abandoned task
/// is bounded, since the process ends soon after.
pub(crate) async fn hand_back<H>(ctx: &WorkerContext<H>, task_id: &str, why: HandBack) {
    let (what, limit) = match why {
        HandBack::NotStarted => ("shutting down", None),
        HandBack::Abandoned => (
            "shutdown grace over while the handler ran",
            Some(ABANDONED_UNLOCK_WAIT),
        ),
    };
    let unlock = ctx.client.unlock(task_id);
    let unlocked: Result<(), String> = match limit {
        Some(limit) => match tokio::time::timeout(limit, unlock).await {
            Ok(answered) => answered.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
        },
        None => unlock.await.map_err(|e| e.to_string()),
    };
    match unlocked {
        Ok(()) if why == HandBack::Abandoned => {
            info!("{what}: task unlocked for another worker")
        }
        Ok(()) => debug!("{what}: task unlocked for another worker"),
        Err(e) => warn!("{what}: could not unlock the task, its lock will expire: {e}"),
    }
}
