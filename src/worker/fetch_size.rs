//! How many tasks one node's fetch may ask for after a reply outgrew its bound.
//!
//! A fetchAndLock reply over its size bound is dropped unread (see `engine/reply.rs`); the tasks
//! it locked are never seen, and their locks run out. Asking for the same number again would
//! lose the next batch the same way, so the fetch ceiling halves with each oversized reply, down
//! to one task. Once replies fit, it grows back gradually — one task per reply that fits and
//! filled the ceiling (the engine had more to give) — until it reaches `--max-tasks` and is
//! lifted; an idle worker keeps its lowered ceiling, since no reply has shown a larger one fits.
//! Halving fast and growing slowly (as TCP does) keeps the tasks lost to an oversized reply few:
//! large variables tend to stay in the tasks of a topic.
//!
//! The worker says so once when the ceiling first comes down (WARN) and once when it is lifted
//! (INFO), never per fetch.

use tracing::{debug, info, warn};

/// The ceiling on the tasks one fetch asks for.
#[derive(Debug)]
pub(crate) struct FetchCeiling {
    /// `None` while no reply has been too large (or since the ceiling was lifted).
    ceiling: Option<usize>,
    /// Where the ceiling is lifted: `--max-tasks`.
    full: usize,
}

impl FetchCeiling {
    /// No ceiling yet; `full` is the most tasks a fetch may ask for at all.
    pub(crate) fn new(full: usize) -> Self {
        FetchCeiling {
            ceiling: None,
            full: full.max(1),
        }
    }

    /// The share a fetch may take: `share`, at most the ceiling.
    pub(crate) fn cap(&self, share: usize) -> usize {
        self.ceiling.map_or(share, |ceiling| share.min(ceiling))
    }

    /// After a fetch that asked for `asked` tasks got a reply over its bound: half as many next
    /// time, at least one.
    pub(crate) fn too_large(&mut self, node: &str, asked: usize) {
        let lowered = (asked / 2).max(1);
        let next = self.ceiling.map_or(lowered, |ceiling| ceiling.min(lowered));
        if self.ceiling.is_none() {
            warn!(
                node = %node,
                "a fetchAndLock reply was over its size bound, and the tasks it locked are lost until their locks run out: fetching at most {next} task(s) at a time until replies fit, then growing back to {}",
                self.full
            );
        } else {
            debug!(node = %node, "fetchAndLock reply still too large: at most {next} task(s) per fetch");
        }
        self.ceiling = Some(next);
    }

    /// After a reply that fit: `got` tasks of `asked`. A reply that filled the ceiling lets it
    /// grow by one.
    pub(crate) fn fitted(&mut self, node: &str, asked: usize, got: usize) {
        let Some(ceiling) = self.ceiling else {
            return;
        };
        if got < asked || asked < ceiling {
            return;
        }
        let next = ceiling + 1;
        if next >= self.full {
            info!(node = %node, "fetchAndLock replies fit again: fetching up to {} tasks at a time", self.full);
            self.ceiling = None;
        } else {
            self.ceiling = Some(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_replies_halve_the_ceiling_down_to_one() {
        let mut ceiling = FetchCeiling::new(8);
        assert_eq!(ceiling.cap(8), 8);
        ceiling.too_large("n", 8);
        assert_eq!(ceiling.cap(8), 4);
        // A fetch that asked for fewer (few free slots) halves from what it asked.
        ceiling.too_large("n", 2);
        assert_eq!(ceiling.cap(8), 1);
        ceiling.too_large("n", 1);
        assert_eq!(ceiling.cap(8), 1);
    }

    #[test]
    fn full_replies_that_fit_grow_the_ceiling_back_until_it_is_lifted() {
        let mut ceiling = FetchCeiling::new(4);
        ceiling.too_large("n", 4);
        assert_eq!(ceiling.cap(4), 2);
        // Fewer tasks than asked: the ceiling was not what limited the reply.
        ceiling.fitted("n", 2, 1);
        assert_eq!(ceiling.cap(4), 2);
        ceiling.fitted("n", 2, 2);
        assert_eq!(ceiling.cap(4), 3);
        ceiling.fitted("n", 3, 3);
        assert_eq!(ceiling.cap(usize::MAX), usize::MAX, "lifted at --max-tasks");
    }
}
