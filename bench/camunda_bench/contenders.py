"""The contenders (camunda-worker at two settings, the Python, JS and Java clients, the ceiling
client, and on request camunda-worker as it was before the ledger and after the structure refactor), as command lines on one engine
and on the cluster, and `run_contender`: one contender through its phases (pickup, throughput,
paced, backlog) with a `Probe` window around each.

The contender's settings live here and nowhere else, so every phase runs the same command lines."""

import json
import os
import signal
import time
import urllib.parse

from .common import BENCH, DELAY_S, REPO, log, spawn, stop_process
from .engines import (
    Paced,
    deploy,
    engine_time,
    finished_count,
    history,
    history_level_args,
    history_records,
    quiesce,
    start_instances,
    wait_finished,
    warm_up,
)
from .jaeger import OTLP_ENDPOINT, start_jaeger
from .measurements import Probe, loadavg, metric_sum, metrics_text, scrape_metrics, status_kib, wait_polling
from .statistics import add_requests, finish_stats, pickup_stats

ALL = ["cw-default", "cw-10", "py-default", "py-tuned", "js", "java", "ceiling"]
# Run only when named in --only: camunda-worker built from LOOKUP_REV, the last build that looked up
# the event subscription before each message (issue 14 replaced it by the marker variable).
# cw-command: the defaults plus a trivial --follow-up-command (bench/trivial_work.sh), the cost of
# the command form itself.
# cw-complete: a route of the complete kind (bench/complete_route.toml) running bench/trivial_work.sh
# while each task is locked, on bench/plain_task.bpmn (deployed over the bundled process after the
# warm-up: the same key and topic, no message after the task).
# cw-structure: camunda-worker built from STRUCTURE_REV, LOOKUP_REV's child, the structure refactor
# that changed no behaviour: against cw-lookup, the price of the restructured src/.
# cw-base: camunda-worker built from the commit given to --compare (a refactor's base): against
# cw-default (this tree), the price of a change that should not change behaviour.
# ceiling-<part>: the ceiling client writing camunda-worker's ledger up to <part> (its --ledger: the
# marker on complete, + correlationKeys, + the flip, + the process instance id), so that each part
# of the ledger has a price on the engine of its own; the plain ceiling writes none of it.
LEDGER_PARTS = ["marker", "keys", "flip", "instance"]
# cw-fixed-<n>: camunda-worker with --concurrency fixed --max-tasks <n>, the fixed settings its adaptive
# default is measured against; cw-adaptive-256: the adaptive limit under a ceiling of 256.
MAX_TASKS_SWEEP = [32, 64, 128, 256]
# cw-traced: the defaults with tracing on, its spans sent to a local Jaeger v2 (bench/camunda_bench/jaeger.py).
EXTRA = (["cw-lookup", "cw-structure", "cw-command", "cw-complete", "cw-base", "cw-traced"]
         + [f"ceiling-{part}" for part in LEDGER_PARTS] + [f"cw-fixed-{n}" for n in MAX_TASKS_SWEEP]
         + ["cw-adaptive-256"])
LOOKUP_REV = "d948207"
STRUCTURE_REV = "e38ba4e"
LEDGER_PART_LABELS = {
    "marker": "the marker set by complete",
    "keys": "marker + correlationKeys",
    "flip": "marker + correlationKeys + the flip",
    "instance": "the worker's whole request: + processInstanceId",
}
CLUSTER_ALL = ["cw-nodes", "cw-lb", "py", "js", "java", "ceiling"]


def contenders(paths, url, engine_port, metrics_port, limit_secs):
    cw = paths["cw"]
    py = [paths["python"], os.path.join(BENCH, "python", "worker.py"), url]
    js = ["node", os.path.join(BENCH, "js", "worker.mjs"), url]
    java = ["java", "-jar", paths["java_jar"], url]
    ceiling = [paths["ceiling"], "--engine-url", url, "--fetchers", "2", "--max-tasks", "200", "--delay-ms", "2000",
               "--limit-secs", str(limit_secs)]
    m = f"127.0.0.1:{metrics_port}"
    ledger_parts = {
        f"ceiling-{part}": {"label": f"ceiling --ledger {part} ({LEDGER_PART_LABELS[part]})",
                            "argv": ceiling + ["--ledger", part], "ua": "bench-ceiling"}
        for part in LEDGER_PARTS
    }
    sweep = {
        f"cw-fixed-{n}": {"label": f"camunda-worker --concurrency fixed --max-tasks {n}",
                          "argv": [cw, "--engine-url", url, "--metrics-addr", m, "--concurrency", "fixed",
                                   "--max-tasks", str(n)],
                          "metrics": metrics_port, "ua": "camunda-worker/"}
        for n in MAX_TASKS_SWEEP
    }
    sweep["cw-adaptive-256"] = {"label": "camunda-worker --max-tasks 256 (adaptive limit up to 256)",
                                "argv": [cw, "--engine-url", url, "--metrics-addr", m, "--max-tasks", "256"],
                                "metrics": metrics_port, "ua": "camunda-worker/"}
    return ledger_parts | sweep | {
        "cw-default": {"label": "camunda-worker (defaults: adaptive limit, --max-tasks 64)",
                       "argv": [cw, "--engine-url", url, "--metrics-addr", m], "metrics": metrics_port,
                       "ua": "camunda-worker/"},
        "cw-lookup": {"label": f"camunda-worker {LOOKUP_REV} (defaults; look-up before each message)",
                      "argv": [paths.get("cw_lookup") or "cw-lookup-not-built", "--engine-url", url,
                               "--metrics-addr", m],
                      "metrics": metrics_port, "ua": "camunda-worker/"},
        "cw-structure": {"label": f"camunda-worker {STRUCTURE_REV} (defaults; the restructured src/, same "
                                  f"behaviour as {LOOKUP_REV})",
                         "argv": [paths.get("cw_structure") or "cw-structure-not-built", "--engine-url", url,
                                  "--metrics-addr", m],
                         "metrics": metrics_port, "ua": "camunda-worker/"},
        "cw-base": {"label": f"camunda-worker {paths.get('base_rev') or '?'} (defaults; the base of the "
                            f"change measured)",
                    "argv": [paths.get("cw_base") or "cw-base-not-built", "--engine-url", url, "--metrics-addr", m],
                    "metrics": metrics_port, "ua": "camunda-worker/"},
        "cw-command": {"label": "camunda-worker --follow-up-command bench/trivial_work.sh",
                       "argv": [cw, "--engine-url", url, "--metrics-addr", m, "--follow-up-command",
                                os.path.join(BENCH, "trivial_work.sh")],
                       "metrics": metrics_port, "ua": "camunda-worker/"},
        "cw-complete": {"label": "camunda-worker, a kind = \"complete\" route running bench/trivial_work.sh "
                                 "(bench/plain_task.bpmn)",
                        "argv": [cw, "--engine-url", url, "--metrics-addr", m, "--config",
                                 os.path.join(BENCH, "complete_route.toml")],
                        "metrics": metrics_port, "ua": "camunda-worker/",
                        "bpmn": os.path.join(BENCH, "plain_task.bpmn"), "delay_s": 0.0},
        "cw-traced": {"label": "camunda-worker (defaults), tracing on: OTLP/HTTP to a local Jaeger v2",
                      "argv": [cw, "--engine-url", url, "--metrics-addr", m], "metrics": metrics_port,
                      "ua": "camunda-worker/", "env": {"OTEL_EXPORTER_OTLP_ENDPOINT": OTLP_ENDPOINT},
                      "jaeger": True},
        "cw-10": {"label": "camunda-worker --max-tasks 10 (the former default)",
                  "argv": [cw, "--engine-url", url, "--metrics-addr", m, "--max-tasks", "10"],
                  "metrics": metrics_port, "ua": "camunda-worker/"},
        "py-default": {"label": "Python client 4.5.0 (defaults: maxTasks 1)", "argv": py, "ua": "python-requests/"},
        "py-tuned": {"label": "Python client 4.5.0 (maxTasks 64)", "argv": py + ["--max-tasks", "64"],
                     "ua": "python-requests/"},
        "js": {"label": "JS client 3.1.0 (maxTasks 64, maxParallelExecutions 64)",
               "argv": js + ["64", "64", "30000", "2000"], "ua": "got"},
        "java": {"label": "Java client 7.21.0 (maxTasks 64)", "argv": java + ["64", "30000", "2000"],
                 "ua": "Apache-HttpClient"},
        "ceiling": {"label": "ceiling (engine alone, minimal Rust client)",
                    "argv": ceiling, "ua": "bench-ceiling"},
    }


def cluster_contenders(paths, cluster, metrics_port, limit_secs):
    """The cluster's contenders: camunda-worker with every node's URL or with the LB's; the other
    clients (same settings as on one node, maxTasks 64 where they have it) and the ceiling through the LB."""
    lb = contenders(paths, cluster.lb_url, cluster.base_port, metrics_port, limit_secs)
    cw = paths["cw"]
    m = f"127.0.0.1:{metrics_port}"
    return {
        "cw-nodes": {"label": "camunda-worker (defaults), both node URLs: one long poll per node",
                     "argv": [cw, "--engine-url", ",".join(cluster.node_urls), "--metrics-addr", m],
                     "metrics": metrics_port, "ua": "camunda-worker/", "ready_ports": cluster.node_ports},
        "cw-lb": {"label": "camunda-worker (defaults), LB URL only",
                  "argv": [cw, "--engine-url", cluster.lb_url, "--metrics-addr", m],
                  "metrics": metrics_port, "ua": "camunda-worker/"},
        "py": dict(lb["py-tuned"], label="Python client 4.5.0 (maxTasks 64), LB URL"),
        "js": dict(lb["js"], label="JS client 3.1.0 (maxTasks 64, maxParallelExecutions 64), LB URL"),
        "java": dict(lb["java"], label="Java client 7.21.0 (maxTasks 64), LB URL"),
        "ceiling": dict(lb["ceiling"], label="ceiling (minimal Rust client, 2 fetchers), LB URL"),
    }


def run_contender(key, spec, engine, paths, args, workdir, phases=("throughput", "paced", "backlog"),
                  n=None, fresh=True, tag=None, history_level=None):
    """One contender: start it, run `phases` in order, stop it.

    fresh: on a freshly started engine (deployed, warmed up), stopped again here; the requests are
    counted from its access log. Otherwise (the cluster) on the running engine after `quiesce`; the
    caller counts the requests with `add_requests` once the engine stopped (the logs are buffered).
    history_level: the fresh engine's history level (None: engine.sh's, full)."""
    log(f"=== {key}: {spec['label']}")
    n = n or args.instances
    stall = args.cluster_stall if not fresh else args.stall_seconds
    timeout = 120 + n * 0.5
    if fresh:
        engine.start(tag or key, history_level_args(history_level) if history_level else ())
    url = engine.url
    result = {"key": key, "label": spec["label"], "argv": [os.path.relpath(a, REPO) if a.startswith(REPO) else a
                                                           for a in spec["argv"]],
              "loadavg_before": loadavg(), "instances": n}
    if history_level:
        result["history_level"] = history_level
    proc = jaeger = None
    try:
        if fresh:
            deploy(paths, url)
            if args.warmup > 0:
                warm_up(engine, paths, args, workdir)
                result["history_records_after_warmup"] = history_records(url)
            if spec.get("bpmn"):
                # The contender's own process, a new version of the same key: the warm-up ran the
                # bundled one, every start from here on runs this.
                deploy(paths, url, spec["bpmn"])
        else:
            result["quiesce"] = quiesce(engine)
        base = finished_count(url)
        logfile = os.path.join(workdir, f"{tag or key}.log")
        if os.path.exists(logfile):
            os.remove(logfile)
        if spec.get("jaeger"):
            jaeger = start_jaeger(paths["jaeger"], workdir, tag or key)
        proc = spawn(spec["argv"], logfile, spec.get("env"))
        for port in spec.get("ready_ports") or [engine.port]:
            wait_polling(proc, port, 120, key)
        time.sleep(1.0)
        result["contender_started_at"] = time.time()
        done_so_far, ok = base, True

        # ---- pickup (cluster): M instances at R/s on random nodes; task created -> completed per instance
        if "pickup" in phases and args.pickup_count > 0:
            q0 = Probe(proc, engine, spec)
            prefix = f"pickup-{key}-"
            # Each start on a node picked at random (seeded), on the node's own URL. Through the
            # LB's strict round robin, the node a start lands on would depend on the parity of the
            # requests the contender itself sent through the LB meanwhile.
            paced = Paced(engine.node_ports, args.pickup_count, args.pickup_rate, prefix, seed=1)
            paced.start()
            paced.join(timeout=args.pickup_count / args.pickup_rate + 120)
            pf, pok = wait_finished(url, done_so_far + args.pickup_count, 180, proc, stall)
            q1 = Probe(proc, engine, spec)
            result["pickup"] = dict(rate=args.pickup_rate, count=args.pickup_count, all_finished=pok,
                                    started_per_node={f"node{i}": c for i, c in enumerate(paced.per_port.values(), 1)},
                                    finished=pf - done_so_far, start_errors=paced.errors,
                                    starter_behind_max_s=round(paced.behind_max_s, 3), **q0.window(q1))
            result["pickup"].update(pickup_stats(url, prefix))
            pk = result["pickup"].get("pickup_ms", {})
            log(f"{key}: pickup {result['pickup']['measured']}/{args.pickup_count}: p50 {pk.get('p50')} ms, "
                f"p99 {pk.get('p99')} ms, max {pk.get('max')} ms")
            ok, done_so_far = pok, pf

        # ---- sparse pickup (cluster): one instance every S seconds, so that a poll parked on the
        # other node is not woken soon by the next task created on its own node
        if ok and "pickup" in phases and args.sparse_count > 0:
            q0 = Probe(proc, engine, spec)
            prefix = f"pickup-sparse-{key}-"
            paced = Paced(engine.node_ports, args.sparse_count, 1 / args.sparse_interval, prefix, seed=2)
            paced.start()
            paced.join(timeout=args.sparse_count * args.sparse_interval + 120)
            pf, pok = wait_finished(url, done_so_far + args.sparse_count, 180, proc, stall)
            q1 = Probe(proc, engine, spec)
            result["pickup_sparse"] = dict(interval_s=args.sparse_interval, count=args.sparse_count,
                                           started_per_node={f"node{i}": c
                                                             for i, c in enumerate(paced.per_port.values(), 1)},
                                           all_finished=pok, finished=pf - done_so_far, start_errors=paced.errors,
                                           starter_behind_max_s=round(paced.behind_max_s, 3), **q0.window(q1))
            result["pickup_sparse"].update(pickup_stats(url, prefix))
            pk = result["pickup_sparse"].get("pickup_ms", {})
            log(f"{key}: sparse pickup {result['pickup_sparse']['measured']}/{args.sparse_count}: p50 {pk.get('p50')} "
                f"ms, p99 {pk.get('p99')} ms, max {pk.get('max')} ms")
            ok, done_so_far = pok, pf

        # ---- throughput: N instances started (camunda-worker start --concurrency 16) while the contender runs
        if ok and "throughput" in phases:
            p0 = Probe(proc, engine, spec)
            start_instances(paths, url, n, timeout)
            t_started = time.time()
            finished, ok = wait_finished(url, done_so_far + n, timeout, proc, stall)
            finished -= done_so_far
            p1 = Probe(proc, engine, spec)
            result["throughput_started_after"] = p0.time
            result["throughput"] = dict(all_finished=ok, finished=finished, start_phase_s=round(t_started - p0.time, 2),
                                        start_rate_per_s=round(n / (t_started - p0.time), 1), **p0.window(p1))
            log(f"{key}: {finished}/{n} finished in {p1.time - p0.time:.1f} s (starts took {t_started - p0.time:.1f} s); "
                f"contender CPU {p1.cpu - p0.cpu:.2f} s, engine CPU {p0.window(p1)['engine_cpu_s']:.2f} s")
            done_so_far += finished

        # ---- paced: M instances at R/s, for the latency when the engine is not saturated
        if ok and "paced" in phases and args.paced_count > 0:
            p2 = Probe(proc, engine, spec)
            paced = Paced(engine.port, args.paced_count, args.paced_rate)
            paced.start()
            paced.join(timeout=args.paced_count / args.paced_rate + 120)
            pf, pok = wait_finished(url, done_so_far + args.paced_count, 120, proc, stall)
            p3 = Probe(proc, engine, spec)
            result["paced"] = dict(rate=args.paced_rate, count=args.paced_count, all_finished=pok,
                                   start_errors=paced.errors, starter_behind_max_s=round(paced.behind_max_s, 3),
                                   **p2.window(p3))
            log(f"{key}: paced {pf - done_so_far}/{args.paced_count} finished")
            ok, done_so_far = pok, pf

        # ---- backlog: the contender paused (SIGSTOP) while B instances are started, then resumed
        if ok and "backlog" in phases and args.backlog > 0:
            b = args.backlog
            t_backlog = time.time()
            # A stopped process cannot answer /metrics: read its counters before it stops (they
            # cannot move while it is stopped).
            m_stop = scrape_metrics(spec["metrics"]) if spec.get("metrics") else None
            proc.send_signal(signal.SIGSTOP)
            try:
                start_instances(paths, url, b, args.phase_timeout)
            finally:
                p4 = Probe(proc, engine, spec, metrics=m_stop or {})
                proc.send_signal(signal.SIGCONT)
            bf, bok = wait_finished(url, done_so_far + b, args.phase_timeout, proc, stall)
            p5 = Probe(proc, engine, spec)
            result["backlog"] = dict(count=b, all_finished=bok, finished=bf - done_so_far,
                                     start_phase_s=round(p4.time - t_backlog, 2), resumed_at=p4.time,
                                     **p4.window(p5))
            result["backlog_started_after"] = t_backlog
            log(f"{key}: backlog {bf - done_so_far}/{b} finished {p5.time - p4.time:.1f} s after resume")

        result["peak_rss_kib"] = status_kib(proc.pid, "VmHWM")
        if spec.get("jaeger"):
            text = metrics_text(spec["metrics"])
            result["trace_spans"] = {
                "exported": metric_sum(text, "camunda_worker_trace_spans_exported_total"),
                "dropped": metric_sum(text, "camunda_worker_trace_spans_dropped_total"),
            }
        result["loadavg_after"] = loadavg()
        instances = history(url, f"&startedAfter={urllib.parse.quote(engine_time(result['contender_started_at']))}")
        stop_process(proc)
        if key == "ceiling" or key.startswith("ceiling-"):
            try:
                with open(logfile) as f:
                    lines = [ln for ln in f if ln.startswith("{")]
                result["ceiling_counters"] = json.loads(lines[-1]) if lines else None
            except (OSError, ValueError):
                pass
    finally:
        if proc is not None:
            stop_process(proc)
        if jaeger is not None:
            stop_process(jaeger)
        if fresh:
            engine.stop()
    finish_stats(result, instances, spec.get("delay_s", DELAY_S))
    if fresh:
        add_requests(result, engine)
    return result
