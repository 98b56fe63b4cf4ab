//! `camunda-worker start`: start process instances with business keys, as a person would from
//! Tasklist, for demos and load.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cli::StartArgs;
use crate::engine::{EngineClient, EngineError, ProcessInstance, StartProcessRequest};
use crate::variables::{parse_assignment, Variables};

/// The result of a `start` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartSummary {
    /// Instances started.
    pub started: u32,
    /// Instances the engine refused.
    pub failed: u32,
}

/// Starts the instances, printing `<instance id> <business key>` per instance on stdout, a
/// progress bar on a terminal, and a summary line on stderr.
pub async fn run(client: &EngineClient, args: &StartArgs) -> anyhow::Result<StartSummary> {
    let variables: Variables = args
        .variables
        .iter()
        .map(|a| parse_assignment(a).map_err(|e| anyhow::anyhow!("--var: {e}")))
        .collect::<anyhow::Result<_>>()?;
    let keys = business_keys(args);
    let bar = progress_bar(keys.len());
    let began = Instant::now();
    let running = spawn_starts(client, args, keys, &variables).await?;
    let (summary, first_error) = collect(running, &bar).await?;
    bar.finish_and_clear();
    let seconds = began.elapsed().as_secs_f64();
    eprintln!(
        "started {}, failed {} in {:.1}s ({:.0}/s)",
        summary.started,
        summary.failed,
        seconds,
        f64::from(summary.started) / seconds.max(1e-3)
    );
    if let Some(error) = first_error {
        if summary.started == 0 {
            return Err(anyhow::Error::new(error)
                .context(format!("cannot start process {}", args.process_key)));
        }
        eprintln!("first failure: {error}");
    }
    Ok(summary)
}

/// One start's business key and what the engine answered.
type Started = (String, Result<ProcessInstance, EngineError>);

/// The business keys to start: `--business-key` once, or a fresh UUID per instance.
fn business_keys(args: &StartArgs) -> Vec<String> {
    match &args.business_key {
        Some(key) => vec![key.clone()],
        None => (0..args.count.get())
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect(),
    }
}

/// A progress bar on a terminal for more than one instance; a hidden one otherwise.
fn progress_bar(instances: usize) -> ProgressBar {
    if !(std::io::stderr().is_terminal() && instances > 1) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(instances as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} started ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Starts one instance per key, at most `--concurrency` at a time.
async fn spawn_starts(
    client: &EngineClient,
    args: &StartArgs,
    keys: Vec<String>,
    variables: &Variables,
) -> anyhow::Result<JoinSet<Started>> {
    let permits = Arc::new(Semaphore::new(args.concurrency.get() as usize));
    let mut running = JoinSet::new();
    for key in keys {
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .context("start semaphore closed")?;
        let client = client.clone();
        let request = StartProcessRequest {
            business_key: key,
            variables: variables.clone(),
        };
        let process_key = args.process_key.clone();
        let tenant_id = args.tenant_id.clone();
        running.spawn(async move {
            let result = client
                .start_process(&process_key, tenant_id.as_deref(), &request)
                .await;
            drop(permit);
            (request.business_key, result)
        });
    }
    Ok(running)
}

/// Waits for every start, printing each started instance; the counts and the first failure.
async fn collect(
    mut running: JoinSet<Started>,
    bar: &ProgressBar,
) -> anyhow::Result<(StartSummary, Option<EngineError>)> {
    let mut summary = StartSummary {
        started: 0,
        failed: 0,
    };
    let mut first_error: Option<EngineError> = None;
    while let Some(joined) = running.join_next().await {
        let (key, result) = joined.context("a start task panicked")?;
        match result {
            Ok(instance) => {
                summary.started += 1;
                bar.suspend(|| println!("{} {}", instance.id, key));
            }
            Err(e) => {
                summary.failed += 1;
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
        bar.inc(1);
    }
    Ok((summary, first_error))
}
