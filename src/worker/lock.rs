//! Keeping a task's lock while its handler runs: the lock is extended at half its duration for as
//! long as the handler runs, so a handler that takes longer than one lock keeps its task.
//!
//! Why half: an extension is one call to the engine, which may be slow or fail; asking at half
//! the duration leaves the other half for it (and for the next try, half a lock later) before the
//! engine would hand the task to another worker.

use std::future::Future;
use std::time::Duration;

use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::engine::EngineError;

/// Waits for the handler (`handle`), calling `extend` (which asks the engine for another `lock`)
/// every half `lock` while it runs. Each extension the engine takes moves `lock_until` on.
/// `None` when `abort` came first: then the handler is aborted.
pub(super) async fn keep_lock<T, F, Fut>(
    mut handle: JoinHandle<T>,
    lock: Duration,
    lock_until: &mut Instant,
    abort: &CancellationToken,
    extend: F,
) -> Option<Result<T, JoinError>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), EngineError>>,
{
    let mut extend_at = Instant::now() + lock / 2;
    loop {
        tokio::select! {
            joined = &mut handle => return Some(joined),
            _ = tokio::time::sleep_until(extend_at) => {
                let asked = Instant::now();
                match extend().await {
                    Ok(()) => {
                        // The engine counts the new duration from when it took the call,
                        // which is after `asked`: this deadline errs on the safe side.
                        *lock_until = asked + lock;
                        debug!("handler still running: lock extended");
                    }
                    Err(e) => warn!("could not extend the lock: {e}"),
                }
                extend_at = Instant::now() + lock / 2;
            }
            _ = abort.cancelled() => {
                handle.abort();
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    const LOCK: Duration = Duration::from_secs(1);

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// A handler that takes `runs`.
    fn handler(runs: Duration) -> JoinHandle<&'static str> {
        tokio::spawn(async move {
            tokio::time::sleep(runs).await;
            "done"
        })
    }

    /// An engine whose extendLock takes `takes` and answers `reply` (by call number); records
    /// when (since `start`) each call was asked.
    struct Engine<R> {
        start: Instant,
        takes: Duration,
        reply: R,
        asked: RefCell<Vec<Duration>>,
    }

    impl<R: Fn(usize) -> Result<(), EngineError>> Engine<R> {
        fn new(takes: Duration, reply: R) -> Self {
            Engine {
                start: Instant::now(),
                takes,
                reply,
                asked: RefCell::new(Vec::new()),
            }
        }

        async fn extend(&self) -> Result<(), EngineError> {
            let call = {
                let mut asked = self.asked.borrow_mut();
                asked.push(self.start.elapsed());
                asked.len() - 1
            };
            tokio::time::sleep(self.takes).await;
            (self.reply)(call)
        }

        /// Keeps a one-`LOCK` lock over a handler that takes `runs`, extending through this
        /// engine; the handler's result and the lock's deadline at the end.
        async fn keep_lock_over(&self, runs: Duration) -> (&'static str, Instant) {
            let mut lock_until = self.start + LOCK;
            let joined = keep_lock(
                handler(runs),
                LOCK,
                &mut lock_until,
                &CancellationToken::new(),
                || self.extend(),
            )
            .await;
            (joined.expect("finished").expect("no panic"), lock_until)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_lock_is_extended_every_half_lock_while_the_handler_runs() {
        let engine = Engine::new(Duration::ZERO, |_| Ok(()));
        let (result, lock_until) = engine.keep_lock_over(ms(2_600)).await;
        assert_eq!(result, "done");
        assert_eq!(
            *engine.asked.borrow(),
            [ms(500), ms(1_000), ms(1_500), ms(2_000), ms(2_500)]
        );
        assert_eq!(
            lock_until,
            engine.start + ms(3_500),
            "the last extension's lock"
        );
        assert_eq!(engine.start.elapsed(), ms(2_600));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_extension_counts_from_when_it_was_asked_and_the_next_from_its_answer() {
        let engine = Engine::new(ms(100), |_| Ok(()));
        let (_, lock_until) = engine.keep_lock_over(ms(1_300)).await;
        assert_eq!(*engine.asked.borrow(), [ms(500), ms(1_100)]);
        assert_eq!(lock_until, engine.start + ms(2_100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_extension_leaves_the_deadline_and_the_next_is_tried_half_a_lock_later() {
        let engine = Engine::new(Duration::ZERO, |call| {
            if call == 1 {
                Err(EngineError::NoNode("test".into()))
            } else {
                Ok(())
            }
        });
        let (_, lock_until) = engine.keep_lock_over(ms(1_200)).await;
        assert_eq!(*engine.asked.borrow(), [ms(500), ms(1_000)]);
        assert_eq!(
            lock_until,
            engine.start + ms(1_500),
            "from the first extension"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_quicker_than_half_a_lock_is_never_extended_and_a_panic_is_returned() {
        let engine = Engine::new(Duration::ZERO, |_| Ok(()));
        let mut lock_until = engine.start + LOCK;
        let joined = keep_lock(
            tokio::spawn(async { panic!("the handler panics") }),
            LOCK,
            &mut lock_until,
            &CancellationToken::new(),
            || engine.extend(),
        )
        .await;
        assert!(joined.expect("finished").is_err_and(|e| e.is_panic()));
        assert!(engine.asked.borrow().is_empty());
        assert_eq!(lock_until, engine.start + LOCK);
    }

    #[tokio::test(start_paused = true)]
    async fn abort_ends_the_wait_and_the_handler() {
        let engine = Engine::new(Duration::ZERO, |_| Ok(()));
        let mut lock_until = engine.start + LOCK;
        let finished = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&finished);
        let handle = tokio::spawn(async move {
            tokio::time::sleep(ms(5_000)).await;
            flag.store(true, Ordering::SeqCst);
        });
        let abort = CancellationToken::new();
        let cancel = abort.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ms(700)).await;
            cancel.cancel();
        });
        let joined = keep_lock(handle, LOCK, &mut lock_until, &abort, || engine.extend()).await;
        assert!(joined.is_none());
        assert_eq!(engine.start.elapsed(), ms(700));
        assert_eq!(*engine.asked.borrow(), [ms(500)]);
        tokio::time::sleep(ms(10_000)).await;
        assert!(!finished.load(Ordering::SeqCst), "the handler was aborted");
    }
}
