//! The follow-up command's stderr, relayed to the log in bounded lines: whatever the program
//! writes, the worker's memory and its log stay bounded, and the relay never stops early.
//!
//! - A line is at most [`MAX_LINE_BYTES`]; the rest of a longer one is read and dropped, and the
//!   logged part ends with `… [cut N bytes]`. (A program that wrote 300 MB without a newline
//!   took the worker to 571 MiB when lines were read whole.)
//! - Bytes that are not UTF-8 are shown as `�` (one such byte used to end the relay, and the
//!   program then blocked on a full pipe).
//! - At most [`LINES_PER_SECOND`] lines a second per run reach the log; the others are counted
//!   and one summary line says how many were dropped.
//!
//! The last non-empty line is kept (cut to [`LAST_LINE_CHARS`], with the same marker) for the incident an ever-failing
//! program leaves, dropped from the log or not.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::time::{Duration, Instant};
use tracing::{info, warn};

/// The longest stderr line logged whole.
pub const MAX_LINE_BYTES: usize = 4096;

/// Lines a second one run may log; a program that logs more is summarised.
pub const LINES_PER_SECOND: u32 = 100;

/// The longest stderr line kept for an incident's message.
pub const LAST_LINE_CHARS: usize = 500;

/// Relays `stderr` to the log until it ends (or fails to read); returns its last non-empty line.
pub async fn relay_stderr<R: AsyncBufRead + Unpin>(mut stderr: R) -> String {
    let mut relay = Relay::new();
    let mut line = Vec::with_capacity(256);
    let mut cut = 0usize;
    loop {
        let chunk = match stderr.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(chunk) => chunk,
        };
        let (taken, ends_line) = match chunk.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (chunk.len(), false),
        };
        let content = &chunk[..if ends_line { taken - 1 } else { taken }];
        let room = MAX_LINE_BYTES - line.len();
        line.extend_from_slice(&content[..content.len().min(room)]);
        cut += content.len().saturating_sub(room);
        stderr.consume(taken);
        if ends_line {
            relay.line(&line, cut);
            line.clear();
            cut = 0;
        }
    }
    if !line.is_empty() || cut > 0 {
        relay.line(&line, cut);
    }
    relay.finish()
}

/// The rate limit and the last line, over one run.
struct Relay {
    window_start: Instant,
    logged_in_window: u32,
    dropped: u64,
    last: String,
}

impl Relay {
    fn new() -> Self {
        Relay {
            window_start: Instant::now(),
            logged_in_window: 0,
            dropped: 0,
            last: String::new(),
        }
    }

    /// One line (`cut` bytes of it dropped past the bound).
    fn line(&mut self, bytes: &[u8], cut: usize) {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim_end_matches('\r');
        let shown = if cut > 0 {
            format!("{text} … [cut {cut} bytes]")
        } else {
            text.to_owned()
        };
        let trimmed = text.trim();
        if !trimmed.is_empty() {
            let kept: String = trimmed.chars().take(LAST_LINE_CHARS).collect();
            let dropped = trimmed.len() - kept.len() + cut;
            self.last = if dropped > 0 {
                format!("{kept} … [cut {dropped} bytes]")
            } else {
                kept
            };
        }
        if self.window_start.elapsed() >= Duration::from_secs(1) {
            self.summarise();
            self.window_start = Instant::now();
            self.logged_in_window = 0;
        }
        if self.logged_in_window >= LINES_PER_SECOND {
            self.dropped += 1;
            return;
        }
        self.logged_in_window += 1;
        info!(stream = "stderr", "follow-up command: {shown}");
    }

    /// One line for the lines dropped since the last summary, if any.
    fn summarise(&mut self) {
        if self.dropped > 0 {
            warn!(
                stream = "stderr",
                "follow-up command: {} stderr lines not logged (more than {LINES_PER_SECOND} a second)",
                self.dropped
            );
            self.dropped = 0;
        }
    }

    fn finish(mut self) -> String {
        self.summarise();
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_long_line_is_cut_with_a_marker_and_the_next_line_is_whole() {
        let mut input = vec![b'a'; MAX_LINE_BYTES + 1000];
        input.extend_from_slice(b"\nnext\n");
        let last = relay_stderr(&input[..]).await;
        assert_eq!(last, "next");
        let mut only_long = vec![b'b'; MAX_LINE_BYTES + 7];
        only_long.push(b'\n');
        let last = relay_stderr(&only_long[..]).await;
        let cut = MAX_LINE_BYTES - LAST_LINE_CHARS + 7;
        assert!(last.ends_with(&format!("… [cut {cut} bytes]")), "{last}");
        assert!(last.starts_with("bbb"));
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced_and_the_relay_goes_on() {
        let input = b"bad \xff byte\nafter\r\nlast without newline";
        assert_eq!(relay_stderr(&input[..]).await, "last without newline");
        let input = b"x\nbad \xff byte\n";
        assert_eq!(relay_stderr(&input[..]).await, "bad \u{fffd} byte");
    }

    #[tokio::test]
    async fn lines_past_the_rate_are_counted_not_logged() {
        let mut relay = Relay::new();
        for _ in 0..LINES_PER_SECOND + 25 {
            relay.line(b"chatty", 0);
        }
        assert_eq!(relay.dropped, 25);
        assert_eq!(relay.logged_in_window, LINES_PER_SECOND);
        assert_eq!(relay.finish(), "chatty");
    }

    #[tokio::test]
    async fn the_rate_window_opens_again_after_a_second() {
        let mut relay = Relay::new();
        for _ in 0..LINES_PER_SECOND + 1 {
            relay.line(b"x", 0);
        }
        assert_eq!(relay.dropped, 1);
        // The window began a second ago.
        relay.window_start = relay
            .window_start
            .checked_sub(Duration::from_secs(1))
            .unwrap();
        relay.line(b"y", 0);
        assert_eq!(relay.dropped, 0, "summarised");
        assert_eq!(relay.logged_in_window, 1);
    }
}
