//! The `camunda-worker` binary: parse, configure logging, dispatch. Everything else lives in the
//! library.

use std::process::ExitCode;

use camunda_worker::cli::Command;
use camunda_worker::engine::EngineClient;
use camunda_worker::traces::{TraceExport, TraceSettings};
use camunda_worker::{commands, config, daemon, shutdown, telemetry};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let (command, print_config, config) = match config::load(std::env::args_os()) {
        Ok(loaded) => loaded,
        Err(error) => error.exit(),
    };
    if print_config {
        return config.print_description();
    }
    let traces = match command.is_none().then(TraceSettings::from_env).transpose() {
        Ok(settings) => settings.flatten(),
        Err(error) => {
            telemetry::print_line(&format!("error: {error}"));
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime_builder().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            telemetry::print_line(&format!("error: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    // Traces (the daemon only, and only with an OTLP endpoint): exported on the runtime.
    let traces =
        match traces.map(|settings| TraceExport::start(&settings, runtime.handle().clone())) {
            None => None,
            Some(Ok(export)) => Some(export),
            Some(Err(error)) => {
                telemetry::print_line(&format!("error: {error}"));
                return ExitCode::FAILURE;
            }
        };
    // Dropped after the runtime (which `shutdown_timeout` consumes): its last lines are written.
    let _log = telemetry::init_with_traces(config.log_format, traces.as_ref());
    let code = match runtime.block_on(dispatch(command, &config)) {
        Ok(code) => code,
        Err(error) => {
            telemetry::print_line(&format!("error: {error:#}"));
            ExitCode::FAILURE
        }
    };
    // The last spans leave while the runtime still runs their requests, within a bound.
    if let Some(traces) = traces {
        traces.finish();
    }
    // Dropping the runtime would wait for every blocking thread — a DNS lookup that hangs in the
    // system resolver among them — so the grace would not be the end. Whatever still runs now
    // was given up already.
    runtime.shutdown_timeout(SHUTDOWN_STRAGGLERS);
    code
}

/// How long blocking work (DNS lookups) may outlast the daemon's own shutdown.
const SHUTDOWN_STRAGGLERS: std::time::Duration = std::time::Duration::from_millis(200);

async fn dispatch(command: Option<Command>, config: &config::Config) -> anyhow::Result<ExitCode> {
    let client = || EngineClient::new(config.engine.clone());
    match command {
        None => {
            let stop = CancellationToken::new();
            shutdown::listen_for_signals(stop.clone());
            let summary = daemon::run(config, stop).await?;
            Ok(if summary.succeeded() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Some(Command::Deploy(args)) => {
            commands::deploy::run(&client()?, &args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Start(args)) => {
            let summary = commands::start::run(&client()?, &args).await?;
            Ok(if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Some(Command::Status) => {
            commands::status::run(&client()?, config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Healthcheck(args)) => {
            let healthy = commands::healthcheck::run(config.metrics_addr, &args).await?;
            Ok(if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// The async runtime: the main thread runs the command's own future (for the daemon, the part that
/// waits for the stop and bounds the shutdown's grace), one worker thread runs the tasks it spawns.
///
/// Why one: the engine, not the worker, is the bottleneck. Draining at the engine's pace the
/// worker needs about a tenth of a core. Against a fake engine on a 2-core machine one worker
/// thread completed about as many tasks per second as two (within the spread of runs), on one core
/// instead of 1.45 and with a fifth less CPU per task: two threads stole work from each other on
/// cores the engine needs too. Every thread that allocates also gets its own glibc heap arena, and
/// with one thread fewer the peak memory of a drain is about 1 MiB lower (BENCHMARKS.md, "Memory").
/// Set here rather than left to tokio, which would also read `TOKIO_WORKER_THREADS` and panic on a
/// value that is not a number.
fn runtime_builder() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(1);
    builder
}
