//! Log output: human-readable text for a terminal, or one JSON object per line for a collector.
//! Levels come from `RUST_LOG` (default `info`). Lines reach stderr through
//! [`crate::log_writer`], so that a closed or full stderr drops lines instead of blocking or
//! stopping the worker.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::LogFormat;
use crate::log_writer::{self, FlushGuard, StderrLog};
use crate::traces::TraceExport;

/// The process's log writer, for the few lines `main` prints itself.
static LOG: OnceLock<StderrLog> = OnceLock::new();

/// Installs the global subscriber, logs only: [`init_with_traces`] without traces.
pub fn init(format: LogFormat) -> FlushGuard {
    init_with_traces(format, None)
}

/// Installs the global subscriber. Logs go to stderr, so that subcommands can print results on
/// stdout for scripts; with `traces`, the task spans go to it too (see [`crate::traces`]), each
/// layer with its own filter, so that `RUST_LOG` shapes the log alone. Keep the guard until the
/// end of `main`: dropping it writes what is queued.
pub fn init_with_traces(format: LogFormat, traces: Option<&TraceExport>) -> FlushGuard {
    let (log, guard) = log_writer::start(std::io::stderr());
    let _ = LOG.set(log.clone());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(log)
        // An internal error would be reported with `eprintln!`, which panics on a closed stderr.
        .log_internal_errors(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_span_events(FmtSpan::NONE);
    let registry = tracing_subscriber::registry().with(traces.map(TraceExport::layer));
    // A second init (tests that run the daemon in-process more than once) keeps the first.
    let _ = match format {
        LogFormat::Text => registry
            .with(logs.with_target(false).with_filter(filter))
            .try_init(),
        LogFormat::Json => registry
            .with(
                logs.json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter),
            )
            .try_init(),
    };
    guard
}

/// Prints one line on stderr the way the log does (never a panic, never a block); before
/// [`init`], straight to stderr, ignoring a failed write.
pub fn print_line(line: &str) {
    let bytes = format!("{line}\n").into_bytes();
    match LOG.get() {
        Some(log) => log.send(bytes),
        None => {
            use std::io::Write;
            let _ = std::io::stderr().write_all(&bytes);
        }
    }
}
