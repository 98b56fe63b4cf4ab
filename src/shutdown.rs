//! Turns SIGTERM / SIGINT into cancellation: the first signal begins a graceful shutdown, a
//! second one ends the process at once (an operator who presses Ctrl-C twice means it).

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Exit code after a second signal: 128 + SIGINT, as shells report an interrupted program.
const FORCED_EXIT_CODE: i32 = 130;

/// Spawns the signal listener; `token` is cancelled on the first SIGTERM or SIGINT.
pub fn listen_for_signals(token: CancellationToken) {
    tokio::spawn(async move {
        if wait_for_signal().await.is_err() {
            warn!("cannot listen for signals; stop the worker with SIGKILL");
            return;
        }
        // Cancel before logging: nothing that happens to the log may keep the shutdown from
        // beginning.
        token.cancel();
        info!("shutdown requested: finishing running tasks and pending messages (signal again to exit at once)");
        if wait_for_signal().await.is_ok() {
            warn!("second signal: exiting now");
            std::process::exit(FORCED_EXIT_CODE);
        }
    });
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
