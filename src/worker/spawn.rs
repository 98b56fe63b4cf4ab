//! Starting the tasks a fetch locked: each on the tracker, in a span of its own (the root of the
//! task's trace, linked to the fetch), holding one set of the fetch's permits until it is done.

use std::sync::Arc;

use opentelemetry::trace::SpanContext;
use tokio::time::Instant;
use tracing::{debug, warn, Instrument};

use super::admission::Permits;
use super::context::WorkerContext;
use super::task::TaskRun;
use crate::engine::{ExternalTask, Node};
use crate::handler::Handler;
use crate::traces;

/// Starts every fetched task on the tracker, each in its own span (the root of the task's
/// trace, linked to the fetch that locked it: `fetched_by`), moving one set of permits into each.
/// Tasks beyond the permits (an engine that handed out more than asked) run too.
pub(crate) fn spawn_tasks<H: Handler>(
    ctx: &Arc<WorkerContext<H>>,
    node: &Node,
    tasks: Vec<ExternalTask>,
    mut permits: Vec<Permits>,
    fetched_by: Option<&SpanContext>,
) {
    if tasks.len() > permits.len() {
        warn!(
            node = %node.name(),
            asked = permits.len(),
            got = tasks.len(),
            "the engine handed out more tasks than asked for; handling them all"
        );
    }
    let fetched_at = Instant::now();
    for task in tasks {
        let span = tracing::info_span!(
            parent: None,
            "task",
            task_id = %task.id,
            process_instance_id = task.process_instance_id.as_deref().unwrap_or(""),
            business_key = task.business_key.as_deref().unwrap_or(""),
            topic = task.topic_name.as_deref().unwrap_or_default(),
            outcome = tracing::field::Empty,
        );
        traces::link(&span, fetched_by);
        ctx.started(&task.id);
        ctx.metrics.tasks_in_flight.inc();
        let (slot, room) = match permits.pop() {
            Some(Permits { slot, room }) => (Some(slot), Some(room)),
            None => (None, None),
        };
        let run = TaskRun::new(Arc::clone(ctx), task, fetched_at, room);
        let ctx = Arc::clone(ctx);
        ctx.tracker.clone().spawn(
            async move {
                let task_id = run.task_id().to_owned();
                let outcome = run.process().await;
                tracing::Span::current().record("outcome", tracing::field::debug(&outcome));
                debug!(?outcome, "task done");
                ctx.finished(&task_id);
                ctx.metrics.tasks_in_flight.dec();
                drop(slot);
            }
            .instrument(span),
        );
    }
}
