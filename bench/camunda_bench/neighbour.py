"""The neighbour run (`--neighbour`): what camunda-worker draining a backlog does to another client of
the same engine, at fixed settings and with its adaptive limit (issue 28).

Each case runs on a fresh engine, warmed up, with the bundled process and the neighbour's
(bench/neighbour_task.bpmn) deployed. Except in the case `alone`, a backlog of the bundled process is
started first and camunda-worker starts draining it; at the same moment the neighbour client
(bench/ceiling's `neighbour`) starts its own instances at a fixed rate on its own topic and completes
their tasks. The neighbour reports the round trips of its instances started after its first seconds
(the window); the driver samples the worker's limit and tasks in flight every second and counts what
the worker finished and what the engine spent over the same window. The cases run in alternating
order over --rounds rounds."""

import json
import os
import statistics
import time

from .common import BENCH, log, spawn, stop_process
from .contenders import contenders
from .engines import deploy, finished_count, http_json, start_instances, warm_up
from .measurements import cpu_seconds, loadavg, metric_sum, metrics_text, status_kib, wait_polling

NEIGHBOUR_MARKERS = ("<!-- neighbour:begin -->", "<!-- neighbour:end -->")
NEIGHBOUR_BPMN = os.path.join(BENCH, "neighbour_task.bpmn")
# The neighbour alone, then camunda-worker beside it at the fixed setting that drained best, with its
# adaptive limit under the same ceiling, and at its defaults.
CASES = ["alone", "cw-fixed-256", "cw-adaptive-256", "cw-default"]


def sample_worker(port):
    """The worker's limit, tasks in flight and tasks completed so far (None when it does not answer)."""
    try:
        text = metrics_text(port)
    except OSError:
        return None
    return {name: metric_sum(text, f"camunda_worker_{name}")
            for name in ("concurrency_limit", "tasks_in_flight", "tasks_completed_total")}


def backlog_left(url):
    return http_json(f"{url}/external-task/count?topicName=messageSending")["count"]


def run_case(case, engine, paths, args, workdir, tag):
    log(f"=== neighbour: {case}")
    engine.start(tag)
    url = engine.url
    result = {"case": case, "loadavg_before": loadavg()}
    worker = None
    try:
        deploy(paths, url)
        deploy(paths, url, NEIGHBOUR_BPMN)
        if args.warmup > 0:
            warm_up(engine, paths, args, workdir)
        if case != "alone":
            spec = contenders(paths, url, engine.port, args.metrics_port, 3600)[case]
            result["label"] = spec["label"]
            t = time.time()
            start_instances(paths, url, args.neighbour_backlog, 120 + args.neighbour_backlog * 0.1)
            result["backlog_start_s"] = round(time.time() - t, 1)
            worker = spawn(spec["argv"], os.path.join(workdir, f"{tag}-worker.log"))
            wait_polling(worker, engine.port, 120, case)
        else:
            result["label"] = "the neighbour alone"
        logfile = os.path.join(workdir, f"{tag}-neighbour.log")
        if os.path.exists(logfile):
            os.remove(logfile)
        neighbour = spawn([paths["neighbour"], "--engine-url", url, "--rate", str(args.neighbour_rate),
                           "--secs", str(args.neighbour_secs), "--measure-after-secs",
                           str(args.neighbour_measure_after)], logfile)
        t_spawn = time.time()
        window = (t_spawn + args.neighbour_measure_after, t_spawn + args.neighbour_secs)
        samples, edges = [], []
        while time.time() < window[1]:
            now = time.time()
            if now >= window[0] and not edges:
                edges.append((finished_count(url), cpu_seconds(engine.pid), now,
                              sample_worker(args.metrics_port) if worker else None))
            if worker and now >= window[0]:
                s = sample_worker(args.metrics_port)
                if s:
                    samples.append(s)
            time.sleep(1.0)
        edges.append((finished_count(url), cpu_seconds(engine.pid), time.time(),
                      sample_worker(args.metrics_port) if worker else None))
        result["backlog_left_at_end"] = backlog_left(url) if worker else None
        neighbour.wait(timeout=args.neighbour_secs + 120)
        with open(logfile) as f:
            lines = [ln for ln in f if ln.startswith("{")]
        result["neighbour"] = json.loads(lines[-1]) if lines else None
        (f0, e0, t0, w0), (f1, e1, t1, w1) = edges
        seconds = t1 - t0
        result["window_s"] = round(seconds, 1)
        result["engine_cores"] = round((e1 - e0) / seconds, 2)
        if worker:
            result["worker_finished_per_s"] = round((f1 - f0) / seconds, 1)
            if w0 and w1:
                done = w1["tasks_completed_total"] - w0["tasks_completed_total"]
                result["worker_completed_per_s"] = round(done / seconds, 1)
            limits = [s["concurrency_limit"] for s in samples if s.get("concurrency_limit") is not None]
            in_flight = [s["tasks_in_flight"] for s in samples if s.get("tasks_in_flight") is not None]
            if limits:
                result["limit"] = {"min": min(limits), "median": statistics.median(limits), "max": max(limits)}
            if in_flight:
                result["in_flight"] = {"min": min(in_flight), "median": statistics.median(in_flight),
                                       "max": max(in_flight)}
            result["worker_peak_rss_kib"] = status_kib(worker.pid, "VmHWM")
        result["loadavg_after"] = loadavg()
        n = result["neighbour"] or {}
        inst = n.get("instance_ms") or {}
        log(f"neighbour {case}: instance p50 {inst.get('p50')} ms, p99 {inst.get('p99')} ms; worker finished "
            f"{result.get('worker_finished_per_s')}/s, limit {result.get('limit')}, backlog left "
            f"{result['backlog_left_at_end']}")
    finally:
        if worker is not None:
            stop_process(worker)
        engine.stop()
    return result


def run_neighbour(engine, paths, args, workdir):
    out = {"rate": args.neighbour_rate, "secs": args.neighbour_secs, "measure_after_s": args.neighbour_measure_after,
           "backlog": args.neighbour_backlog, "rounds": args.rounds, "warmup": args.warmup, "cases": {}}
    for rnd in range(args.rounds):
        for case in (CASES if rnd % 2 == 0 else CASES[::-1]):
            tag = f"neighbour-{case}-r{rnd + 1}"
            try:
                r = run_case(case, engine, paths, args, workdir, tag)
            except (RuntimeError, OSError, ValueError) as e:
                log(f"neighbour {case} failed: {e}")
                r = {"case": case, "error": str(e)}
            r["round"] = rnd + 1
            out["cases"].setdefault(case, []).append(r)
    return out


def spread(vals, nd=1):
    vals = [v for v in vals if isinstance(v, (int, float))]
    if not vals:
        return "–"
    mean = sum(vals) / len(vals)
    return f"{mean:.{nd}f}" if len(vals) == 1 else f"{mean:.{nd}f} ({min(vals):.{nd}f}–{max(vals):.{nd}f})"


def neighbour_value(run, what, q):
    return ((run.get("neighbour") or {}).get(what) or {}).get(q)


def neighbour_section(res):
    """Markdown for "Beside another client": per case the neighbour's round trips (mean over the
    rounds of each round's percentile, with the range), what the worker drained meanwhile, and its
    limit."""
    nb = res.get("neighbour") or {}
    cases = nb.get("cases") or {}
    lines = [(f"Run of {res['started']} (`{res.get('command', '')}`): {nb.get('rounds')} round(s), the cases in "
             f"alternating order, each on a fresh engine (history level full) warmed with {nb.get('warmup')} "
             f"instances. The neighbour starts {nb.get('rate'):g} instances/s of its own process (one external task "
             f"on its own topic) for {nb.get('secs')} s and completes each task at once; its instances started from "
             f"{nb.get('measure_after_s')} s on are measured (the window). Beside it, camunda-worker drains a backlog "
             f"of {nb.get('backlog')} instances of the bundled process, started before both. Whole run "
             f"{res.get('total_seconds', 0) / 60:.1f} min; load average {res['loadavg_start']} at the start."), "",
             ("| case | neighbour instance p50 ms | p99 ms | neighbour complete p50 ms | p99 ms | worker finished/s "
              "| worker completed/s | limit (median of the window) | tasks in flight (median) | engine cores | "
              "backlog left at the end |"),
             "|---|" + "---:|" * 10]
    for case in CASES:
        runs = [r for r in cases.get(case, []) if not r.get("error")]
        failed = len(cases.get(case, [])) - len(runs)
        label = next((r.get("label") for r in runs), case) + (f" ({failed} failed)" if failed else "")
        cells = [spread([neighbour_value(r, "instance_ms", "p50") for r in runs]),
                 spread([neighbour_value(r, "instance_ms", "p99") for r in runs]),
                 spread([neighbour_value(r, "complete_ms", "p50") for r in runs]),
                 spread([neighbour_value(r, "complete_ms", "p99") for r in runs]),
                 spread([r.get("worker_finished_per_s") for r in runs]),
                 spread([r.get("worker_completed_per_s") for r in runs]),
                 spread([(r.get("limit") or {}).get("median") for r in runs], 0),
                 spread([(r.get("in_flight") or {}).get("median") for r in runs], 0),
                 spread([r.get("engine_cores") for r in runs], 2),
                 ", ".join(str(r.get("backlog_left_at_end")) for r in runs) if case != "alone" else "–"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    alone = [neighbour_value(r, "instance_ms", "p50") for r in cases.get("alone", []) if not r.get("error")]
    alone = [v for v in alone if v is not None]
    if alone:
        base = sum(alone) / len(alone)
        rel = []
        for case in CASES[1:]:
            vals = [neighbour_value(r, "instance_ms", "p50") for r in cases.get(case, []) if not r.get("error")]
            vals = [v for v in vals if v is not None]
            if vals:
                rel.append(f"{case} {sum(vals) / len(vals) / base:.1f} ×")
        lines += ["", "The neighbour's instance p50 against alone: " + ", ".join(rel) + "."]
    lines += ["", ("| round | case | neighbour instances measured | instance p50 / p90 / p99 / max ms | worker finished/s "
                   "| limit min / median / max | peak RSS MiB | load average before → after |"),
              "|---:|---|---:|---:|---:|---:|---:|---|"]
    for case in CASES:
        for r in cases.get(case, []):
            if r.get("error"):
                lines.append(f"| {r.get('round')} | {case} (failed: {r['error'][:80]}) | | | | | | |")
                continue
            inst = (r.get("neighbour") or {}).get("instance_ms") or {}
            lim = r.get("limit") or {}
            rss = r.get("worker_peak_rss_kib")
            lines.append(f"| {r['round']} | {case} | {inst.get('count', '–')} | {inst.get('p50')} / {inst.get('p90')} / "
                         f"{inst.get('p99')} / {inst.get('max')} | {r.get('worker_finished_per_s', '–')} | "
                         f"{lim.get('min', '–')} / {lim.get('median', '–')} / {lim.get('max', '–')} | "
                         f"{f'{rss / 1024:.1f}' if rss else '–'} | {r.get('loadavg_before')} → {r.get('loadavg_after')} |")
    return "\n".join(lines) + "\n"
