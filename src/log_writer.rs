//! The log's way to stderr: it never blocks the runtime, never panics, and never stops the worker.
//!
//! Each formatted line is handed to one writer thread through a bounded queue. A full queue
//! (nobody reads stderr: a full pipe, a stalled terminal) or a failed write (a closed pipe gives
//! `EPIPE`) drops the line and counts it in `log_lines_dropped_total`: losing log lines is
//! better than a worker that hangs on a write, or — as `eprintln!` does — panics on it and so
//! never sees its SIGTERM. Before the process exits, [`FlushGuard`] gives the thread a bounded
//! moment to write what is queued.

use std::io::Write;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

use crate::metrics::log_lines_dropped;

/// Lines that may wait for stderr. A burst larger than this (thousands of lines while stderr
/// is slow) is dropped in part rather than held in memory or waited for.
const QUEUE_LINES: usize = 4096;

/// How long the exit waits for queued lines to be written: stderr that does not take them by
/// then is not read, and the process must end.
const FLUSH_WAIT: Duration = Duration::from_millis(500);

/// What the writer thread is asked to do.
enum Message {
    /// Write these bytes (one formatted event, or one line of `main`'s own).
    Line(Vec<u8>),
    /// Everything sent before is written (or dropped): acknowledge.
    Flush(mpsc::Sender<()>),
}

/// The log's writer: a cheap handle on the queue to the writer thread.
#[derive(Debug, Clone)]
pub struct StderrLog {
    queue: SyncSender<Message>,
}

/// Writes what is still queued, within [`FLUSH_WAIT`], when dropped at the end of `main`.
#[derive(Debug)]
pub struct FlushGuard {
    log: Option<StderrLog>,
}

/// Starts the writer thread over `sink` (stderr in the daemon; a test's pipe in tests).
pub fn start<W: Write + Send + 'static>(sink: W) -> (StderrLog, FlushGuard) {
    let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
    let spawned = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(sink, &lines));
    let log = StderrLog { queue };
    if spawned.is_err() {
        // No thread: every send finds its receiver gone and counts the line as dropped.
        log_lines_dropped().inc();
    }
    (log.clone(), FlushGuard { log: Some(log) })
}

/// The writer thread: one `write_all` per line; a failed write drops that line only, so that a
/// stderr that comes back (a terminal resumed) gets the lines after.
fn write_lines<W: Write>(mut sink: W, lines: &Receiver<Message>) {
    while let Ok(message) = lines.recv() {
        match message {
            Message::Line(line) => {
                if sink.write_all(&line).and_then(|()| sink.flush()).is_err() {
                    log_lines_dropped().inc();
                }
            }
            Message::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

impl StderrLog {
    /// Queues `bytes` for stderr, or drops (and counts) them when the queue is full.
    pub fn send(&self, bytes: Vec<u8>) {
        match self.queue.try_send(Message::Line(bytes)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                log_lines_dropped().inc();
            }
        }
    }

    /// Waits up to [`FLUSH_WAIT`] until what was queued before is written.
    fn flush(&self) {
        let (done, written) = mpsc::channel();
        if self.queue.try_send(Message::Flush(done)).is_ok() {
            let _ = written.recv_timeout(FLUSH_WAIT);
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            log.flush();
        }
    }
}

/// One event's bytes as the formatter writes them: the formatter writes each event whole, in one
/// call, so each call is one line.
#[derive(Debug)]
pub struct LineWriter<'a> {
    log: &'a StderrLog,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.log.send(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for StderrLog {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { log: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink whose every write fails as a closed pipe does.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A sink that never takes a byte: a pipe nobody reads, once full.
    struct FullPipe;

    impl Write for FullPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            std::thread::park();
            Ok(0)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_stderr_drops_and_counts_lines_without_a_panic() {
        let before = log_lines_dropped().get();
        let (log, guard) = start(ClosedPipe);
        log.send(b"one\n".to_vec());
        log.send(b"two\n".to_vec());
        drop(guard);
        assert!(log_lines_dropped().get() >= before + 2);
    }

    #[test]
    fn a_stderr_nobody_reads_neither_blocks_the_sender_nor_the_exit() {
        let before = log_lines_dropped().get();
        let (log, guard) = start(FullPipe);
        // The thread is stuck on the first line; the queue fills, then every line is dropped,
        // and each send returns at once (the test would hang otherwise).
        for _ in 0..QUEUE_LINES + 10 {
            log.send(b"line\n".to_vec());
        }
        assert!(log_lines_dropped().get() >= before + 9);
        // The exit's flush gives up instead of waiting for the stuck thread.
        drop(guard);
    }

    #[test]
    fn lines_reach_a_working_stderr_in_order() {
        let (sink, read) = std::sync::mpsc::channel::<Vec<u8>>();
        struct Collect(std::sync::mpsc::Sender<Vec<u8>>);
        impl Write for Collect {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let _ = self.0.send(buf.to_vec());
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (log, guard) = start(Collect(sink));
        log.send(b"a\n".to_vec());
        log.send(b"b\n".to_vec());
        drop(guard);
        let written: Vec<Vec<u8>> = read.try_iter().collect();
        assert_eq!(written, vec![b"a\n".to_vec(), b"b\n".to_vec()]);
    }
}
