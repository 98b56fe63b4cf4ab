"""The metrics contract: every series the worker exports, with its type and labels.

The dashboard and the alert rules may only use these metric names, label names and label values
(plus `up` and the scrape target's `job` and `instance`); keep this in step with src/metrics.rs.
"""

# name -> (type, {label: allowed values, or None for free-form}). Every series also carries the
# scrape target's `job` and `instance`.
ENDPOINTS = {
    "fetchAndLock",
    "complete",
    "failure",
    "bpmnError",
    "extendLock",
    "unlock",
    "message",
    "eventSubscriptions",
    "processInstance",
    "externalTaskLog",
    "externalTasks",
    "engine",
    "deploy",
    "start",
}
NODE = {"node": None}
# The per-route counters: one series per topic (`[[route]]`).
TOPIC = {"topic": None}
METRICS = {
    "camunda_worker_fetch_requests_total": (
        "counter",
        {**NODE, "outcome": {"tasks", "empty", "error"}},
    ),
    "camunda_worker_tasks_fetched_total": ("counter", dict(NODE)),
    "camunda_worker_tasks_completed_total": ("counter", dict(TOPIC)),
    "camunda_worker_tasks_failed_total": ("counter", dict(TOPIC)),
    "camunda_worker_tasks_dropped_total": (
        "counter",
        {**TOPIC, "reason": {"task_gone", "lock_lost", "failed"}},
    ),
    "camunda_worker_follow_ups_sent_total": ("counter", dict(TOPIC)),
    "camunda_worker_follow_ups_already_delivered_total": ("counter", {}),
    "camunda_worker_follow_ups_retried_total": ("counter", {}),
    "camunda_worker_follow_ups_given_up_total": (
        "counter",
        {**TOPIC, "reason": {"timeout", "ambiguous", "refused", "shutdown", "work_failed"}},
    ),
    "camunda_worker_follow_ups_recovered_total": ("counter", dict(TOPIC)),
    "camunda_worker_reconciler_passes_total": ("counter", {"outcome": {"ok", "error"}}),
    "camunda_worker_engine_stale_connection_retries_total": ("counter", dict(NODE)),
    "camunda_worker_log_lines_dropped_total": ("counter", {}),
    "camunda_worker_background_tasks_died_total": (
        "counter",
        {"task": {"fetch_loop", "reconciler", "discovery", "listener"}},
    ),
    "camunda_worker_tasks_in_flight": ("gauge", {}),
    "camunda_worker_max_tasks": ("gauge", {}),
    "camunda_worker_concurrency_limit": ("gauge", {}),
    "camunda_worker_follow_ups_pending": ("gauge", {}),
    "camunda_worker_follow_ups_capacity": ("gauge", {}),
    "camunda_worker_fetch_paused": ("gauge", {}),
    "camunda_worker_follow_ups_misconfigured": ("gauge", {**TOPIC, "cause": {"message_name"}}),
    "camunda_worker_engine_up": ("gauge", dict(NODE)),
    "camunda_worker_fetch_backoff_seconds": ("gauge", dict(NODE)),
    "camunda_worker_last_successful_poll_timestamp_seconds": ("gauge", {}),
    "camunda_worker_long_poll_seconds": ("gauge", {}),
    "camunda_worker_handler_duration_seconds": ("histogram", {}),
    "camunda_worker_engine_request_duration_seconds": (
        "histogram",
        {**NODE, "endpoint": ENDPOINTS},
    ),
    "camunda_worker_task_end_to_end_seconds": ("histogram", {}),
    "camunda_worker_follow_up_delay_error_seconds": ("histogram", {}),
}
TARGET_LABELS = {"job", "instance"}


def series(name):
    """(kind, labels) of a series name: kinds counter, gauge, bucket, hist_sum_count, up."""
    if name == "up":
        return "up", {}
    if name in METRICS and METRICS[name][0] != "histogram":
        return METRICS[name]
    for suffix, kind in (
        ("_bucket", "bucket"),
        ("_sum", "hist_sum_count"),
        ("_count", "hist_sum_count"),
    ):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base in METRICS and METRICS[base][0] == "histogram":
            labels = dict(METRICS[base][1])
            if kind == "bucket":
                labels["le"] = None
            return kind, labels
    return None
