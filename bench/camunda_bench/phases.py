"""The phases other than the per-contender throughput runs: idle (all real workers at once, no
work), overhead (camunda-worker against the fake engine), mismatch (every follow-up undeliverable:
memory and the load on the engine at the pending follow-up bound), the 2-node cluster, and one node
on PostgreSQL vs H2.

Each returns the dict that goes into results.json under its name."""

import os
import subprocess
import time

from .common import JAVA_OPTS, REPO, STARTUP_WINDOW_S, log, spawn, stop_process
from .contenders import cluster_contenders, contenders, run_contender
from .engines import Cluster, deploy, http_json, start_instances, warm_up
from .measurements import (
    count_requests,
    cpu_seconds,
    diff_counts,
    loadavg,
    metric_sum,
    metrics_text,
    scrape_metrics,
    status_kib,
    thread_cpu_ns,
    wait_polling,
)
from .statistics import add_requests


def run_idle(engine, paths, args, workdir, keys):
    log(f"=== idle: {', '.join(keys)} at once: {args.idle_settle:g} s settling, then {args.idle_seconds:g} s measured")
    engine.start("idle")
    result = {"seconds": args.idle_seconds, "settle_s": args.idle_settle, "contenders": {}, "loadavg_before": loadavg()}
    procs, spawned = {}, {}
    try:
        deploy(paths, engine.url)
        specs = contenders(paths, engine.url, engine.port, args.metrics_port, 60)
        for key in keys:
            logfile = os.path.join(workdir, f"idle-{key}.log")
            if os.path.exists(logfile):
                os.remove(logfile)
            procs[key] = spawn(specs[key]["argv"], logfile)
            spawned[key] = time.time()
        for key, proc in procs.items():
            wait_polling(proc, engine.port, 120, key)
        time.sleep(args.idle_settle)
        m0 = scrape_metrics(args.metrics_port)
        c0 = {k: thread_cpu_ns(p.pid) for k, p in procs.items()}
        s0 = {k: cpu_seconds(p.pid) for k, p in procs.items()}
        e0, t0 = cpu_seconds(engine.pid), time.time()
        time.sleep(args.idle_seconds)
        c1 = {k: thread_cpu_ns(p.pid) for k, p in procs.items()}
        s1 = {k: cpu_seconds(p.pid) for k, p in procs.items()}
        e1, t1 = cpu_seconds(engine.pid), time.time()
        m1 = scrape_metrics(args.metrics_port)
        for key, proc in procs.items():
            cpu = (c1[key] - c0[key]) / 1e9
            result["contenders"][key] = {"label": specs[key]["label"], "ua": specs[key]["ua"],
                                         "cpu_s": round(cpu, 5), "cpu_s_from_ticks": round(s1[key] - s0[key], 3),
                                         "core_percent": round(cpu / (t1 - t0) * 100, 4),
                                         "rss_kib": status_kib(proc.pid, "VmRSS"),
                                         "peak_rss_kib": status_kib(proc.pid, "VmHWM")}
        if "cw-default" in result["contenders"]:
            result["contenders"]["cw-default"]["worker_metrics_requests"] = diff_counts(m1, m0)
        result["engine_cpu_s"] = round(e1 - e0, 3)
        result["window"] = [t0, t1]
        for proc in procs.values():
            stop_process(proc)
    finally:
        for proc in procs.values():
            stop_process(proc, grace=5)
        engine.stop()
    result["loadavg_after"] = loadavg()
    # Requests per contender, by User-Agent, from the access log.
    w0, w1 = result["window"]
    minutes = (w1 - w0) / 60
    for key, c in result["contenders"].items():
        reqs = (count_requests(engine.access_logs, w0, w1, ua=c["ua"]) or ({}, {}))[0]
        c["engine_requests"] = reqs
        c["requests_per_min"] = round(sum(reqs.values()) / minutes, 2)
        c["requests_per_min_by_endpoint"] = {k: round(v / minutes, 2) for k, v in reqs.items()}
        log(f"idle {key}: {c['requests_per_min']} req/min {reqs}, {c['core_percent']:.3f} % of a core, "
            f"RSS {c['rss_kib'] / 1024:.1f} MiB")
    # camunda-worker's start-up: its first 2 minutes (or what the run had of them), apart from the steady state.
    if "cw-default" in spawned:
        a = spawned["cw-default"]
        b = min(a + STARTUP_WINDOW_S, w1)
        reqs = (count_requests(engine.access_logs, a, b, ua="camunda-worker/") or ({}, {}))[0]
        mins = (b - a) / 60
        result["startup"] = {"key": "cw-default", "window": [a, b], "seconds": round(b - a, 1), "engine_requests": reqs,
                             "requests_per_min": round(sum(reqs.values()) / mins, 2),
                             "requests_per_min_by_endpoint": {k: round(v / mins, 2) for k, v in reqs.items()}}
        log(f"idle cw-default start-up ({b - a:.0f} s after its start): {result['startup']['requests_per_min']} "
            f"req/min {reqs}")
    return result


def run_overhead(paths, args, workdir):
    log("=== worker overhead against the fake engine")
    results = []
    fake_log = os.path.join(workdir, "fake-engine.log")
    fake = spawn([paths["fake"], "--port", str(args.fake_port)], fake_log)
    try:
        deadline = time.time() + 20
        while True:
            try:
                http_json(f"http://127.0.0.1:{args.fake_port}/stats")
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("fake engine did not come up")
                time.sleep(0.1)
        url = f"http://127.0.0.1:{args.fake_port}/engine-rest"
        for max_tasks in (10, 64):
            lb = loadavg()
            logfile = os.path.join(workdir, f"overhead-{max_tasks}.log")
            proc = spawn([paths["cw"], "--engine-url", url, "--metrics-addr", f"127.0.0.1:{args.metrics_port}",
                          "--correlation-delay", "0s", "--max-tasks", str(max_tasks)], logfile,
                         env={"RUST_LOG": "warn"})
            time.sleep(args.overhead_warmup)
            if proc.poll() is not None:
                raise RuntimeError(f"camunda-worker exited early against the fake engine (see {logfile})")
            s0 = http_json(f"http://127.0.0.1:{args.fake_port}/stats")
            c0, f0, t0 = cpu_seconds(proc.pid), cpu_seconds(fake.pid), time.time()
            time.sleep(args.overhead_seconds)
            s1 = http_json(f"http://127.0.0.1:{args.fake_port}/stats")
            c1, f1, t1 = cpu_seconds(proc.pid), cpu_seconds(fake.pid), time.time()
            rss = status_kib(proc.pid, "VmHWM")
            stop_process(proc)
            tasks = s1["completes"] - s0["completes"]
            cpu = c1 - c0
            r = {"max_tasks": max_tasks, "seconds": round(t1 - t0, 2), "tasks": tasks,
                 "messages": s1["messages"] - s0["messages"], "requests": s1["requests"] - s0["requests"],
                 "tasks_per_s": round(tasks / (t1 - t0), 1), "worker_cpu_s": round(cpu, 3),
                 "worker_cores": round(cpu / (t1 - t0), 3), "fake_engine_cpu_s": round(f1 - f0, 3),
                 "tasks_per_cpu_s": round(tasks / cpu, 1) if cpu else None,
                 "cpu_us_per_task": round(cpu / tasks * 1e6, 1) if tasks else None,
                 "requests_per_task": round((s1["requests"] - s0["requests"]) / tasks, 3) if tasks else None,
                 "peak_rss_kib": rss, "window": [t0, t1], "loadavg_before": lb, "loadavg_after": loadavg()}
            log(f"overhead --max-tasks {max_tasks}: {r['tasks_per_s']} tasks/s, {r['cpu_us_per_task']} µs CPU/task, "
                f"{r['tasks_per_cpu_s']} tasks per CPU-second, worker {r['worker_cores']} cores, "
                f"peak RSS {rss / 1024:.1f} MiB")
            results.append(r)
    finally:
        stop_process(fake)
    return results


def run_mismatch(engine, paths, args, workdir):
    """camunda-worker (defaults) with every follow-up undeliverable, on more waiting tasks than its
    pending follow-up capacity: it completes tasks until the capacity is full, then fetching pauses.
    Memory at that point is its worst case with the default bounds.

    Then it waits until every pending follow-up has made its first attempt (the count of
    `follow_up_delay_error_seconds`, observed at each first attempt, reaches the pending count):
    first attempts, and the marker read that decides their mismatch, are exempt from the retry
    budget, and they can come well after fetching paused. `mismatch_settle` s later the window
    starts and lasts `mismatch_hold` s: what the worker asks of the engine from then on is retries
    only, `undeliverable_requests_per_s`, which the retry budget (`--retry-budget`, 20/s) bounds."""
    n, cap = args.mismatch_instances, args.mismatch_capacity
    log(f"=== mismatch: {n} instances, every follow-up undeliverable, capacity {cap or 'default (4096)'}")
    result = {"instances": n, "capacity": cap or 4096, "capacity_is_default": cap is None, "hold_s": args.mismatch_hold,
              "settle_s": args.mismatch_settle, "loadavg_before": loadavg()}
    engine.start("mismatch")
    port = args.metrics_port
    argv = [paths["cw"], "--engine-url", engine.url, "--metrics-addr", f"127.0.0.1:{port}",
            "--message-name", "no_such_message", "--correlation-timeout", "1h"]
    if cap:
        argv += ["--max-pending-follow-ups", str(cap)]
    result["argv"] = [os.path.relpath(a, REPO) if a.startswith(REPO) else a for a in argv]
    proc = None
    try:
        deploy(paths, engine.url)
        t = time.time()
        start_instances(paths, engine.url, n, 120 + n * 0.5)
        result["start_phase_s"] = round(time.time() - t, 1)
        logfile = os.path.join(workdir, "mismatch.log")
        if os.path.exists(logfile):
            os.remove(logfile)
        proc = spawn(argv, logfile)
        t_spawn = time.time()
        paused = False
        while time.time() < t_spawn + args.mismatch_wait:
            if proc.poll() is not None:
                raise RuntimeError(f"camunda-worker exited with {proc.returncode} (see {logfile})")
            if metric_sum(metrics_text(port), "camunda_worker_fetch_paused") == 1:
                paused = True
                break
            time.sleep(1.0)
        result["fetch_paused"] = paused
        result["paused_after_s"] = round(time.time() - t_spawn, 1) if paused else None
        if not paused:
            result["error"] = f"camunda_worker_fetch_paused did not become 1 within {args.mismatch_wait:g} s"
            log(f"mismatch: {result['error']}")
        else:
            t_paused = time.time()
            first = "camunda_worker_follow_up_delay_error_seconds"
            while True:
                text = metrics_text(port)
                done = metric_sum(text, f"{first}_count") or 0
                pending = metric_sum(text, "camunda_worker_follow_ups_pending") or 0
                if done >= pending or time.time() > t_paused + args.mismatch_wait:
                    break
                time.sleep(1.0)
            result["first_attempts"] = {"count": done, "pending": pending,
                                        "done_after_pause_s": round(time.time() - t_paused, 1) if done >= pending
                                        else None,
                                        "mean_lateness_s": round((metric_sum(text, f"{first}_sum") or 0) / done, 2)
                                        if done else None}
            log(f"mismatch: fetching paused {result['paused_after_s']:.0f} s after the start; first attempts "
                f"{done:.0f}/{pending:.0f} {time.time() - t_paused:.0f} s later (mean "
                f"{result['first_attempts']['mean_lateness_s']} s late); window of {args.mismatch_hold:g} s from "
                f"{args.mismatch_settle:g} s later")
            time.sleep(args.mismatch_settle)
        m0 = scrape_metrics(port)
        b0 = metric_sum(metrics_text(port), "camunda_worker_retry_budget_spent_total")
        c0, e0, t0 = cpu_seconds(proc.pid), cpu_seconds(engine.pid), time.time()
        time.sleep(args.mismatch_hold)
        c1, e1, t1 = cpu_seconds(proc.pid), cpu_seconds(engine.pid), time.time()
        text = metrics_text(port)
        result["window"] = [t0, t1]
        result["status_kib"] = {k: status_kib(proc.pid, k) for k in ("VmHWM", "VmRSS", "RssAnon", "RssFile")}
        result["metrics"] = {name: metric_sum(text, f"camunda_worker_{name}")
                             for name in ("follow_ups_pending", "follow_ups_capacity", "fetch_paused",
                                          "tasks_completed_total", "tasks_fetched_total", "tasks_in_flight",
                                          "follow_ups_retried_total", "follow_ups_sent_total",
                                          "follow_ups_given_up_total", "follow_ups_misdirected",
                                          "retry_budget_spent_total", "retry_budget_waiting",
                                          "retry_budget_per_second")}
        b1 = result["metrics"]["retry_budget_spent_total"]
        result["hold"] = {"contender_cpu_s": round(c1 - c0, 3), "engine_cpu_s": round(e1 - e0, 3),
                          "core_percent": round((c1 - c0) / (t1 - t0) * 100, 2),
                          "worker_metrics_requests": diff_counts(scrape_metrics(port), m0),
                          "retry_budget_spent_per_s": (round((b1 - b0) / (t1 - t0), 2)
                                                       if b0 is not None and b1 is not None else None)}
        stop_process(proc, grace=5)
    finally:
        if proc is not None:
            stop_process(proc, grace=5)
        engine.stop()
    result["loadavg_after"] = loadavg()
    if "window" in result:
        got = count_requests(engine.access_logs, result["window"][0], result["window"][1], "contender")
        if got is not None:
            result["hold"]["engine_requests"] = got[0]
            result["hold"]["requests_per_s"] = round(sum(got[0].values()) / (result["window"][1] - result["window"][0]), 1)
            # The figure: requests/s to the engine while the worker holds its undeliverable follow-ups.
            result["undeliverable_requests_per_s"] = result["hold"]["requests_per_s"]
            log(f"mismatch: {result['hold']['requests_per_s']} requests/s to the engine over {args.mismatch_hold:g} s "
                f"({got[0]}); retry budget spent {result['hold']['retry_budget_spent_per_s']}/s")
    st, mt = result.get("status_kib", {}), result.get("metrics", {})
    if st:
        log(f"mismatch: VmHWM {st['VmHWM'] / 1024:.1f} MiB, VmRSS {st['VmRSS'] / 1024:.1f} MiB (anon "
            f"{st['RssAnon'] / 1024:.1f}, file {st['RssFile'] / 1024:.1f}); pending {mt.get('follow_ups_pending')}, "
            f"completed {mt.get('tasks_completed_total')}")
    return result


def run_cluster(paths, args, workdir, keys):
    """The 2-node cluster: each contender in turn (pickup, throughput), the ceiling through the LB last."""
    cl = Cluster(args.cluster_base_port, 2, workdir)
    n = args.cluster_instances
    log(f"=== cluster: 2 nodes on PostgreSQL behind HAProxy (:{cl.base_port}); {', '.join(keys)}")
    out = {"nodes": 2, "lb_url": cl.lb_url, "node_urls": cl.node_urls, "java_opts": JAVA_OPTS, "instances": n,
           "pickup_rate": args.pickup_rate, "pickup_count": args.pickup_count,
           "sparse_interval_s": args.sparse_interval, "sparse_count": args.sparse_count, "warmup": args.warmup,
           "loadavg_before": loadavg(), "started_at": time.time(), "runs": {}}
    limit = int((120 + n * 0.5) * 2 + 300)
    specs = cluster_contenders(paths, cl, args.metrics_port, limit)
    try:
        cl.start("cluster")
        out["cluster_start_s"] = cl.started_s
        deploy(paths, cl.url)
        if args.warmup > 0:
            warm_up(cl, paths, args, workdir)
        for key in keys:
            spec = specs[key]
            phases = ("throughput",) if key == "ceiling" else ("pickup", "throughput")
            try:
                out["runs"][key] = run_contender(key, spec, cl, paths, args, workdir, phases=phases, n=n, fresh=False,
                                                 tag=f"cluster-{key}")
            except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
                log(f"cluster {key} failed: {e}")
                out["runs"][key] = {"key": key, "label": spec["label"], "error": str(e)}
    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
        log(f"cluster failed: {e}")
        out["error"] = str(e)
    finally:
        cl.stop()
    for r in out["runs"].values():
        if not r.get("error"):
            add_requests(r, cl)
    out["loadavg_after"] = loadavg()
    out["finished_at"] = time.time()
    return out


def run_pg_vs_h2(engine, paths, args, workdir):
    """camunda-worker (defaults) on one node on PostgreSQL (the node's URL, no LB) and on the bundled
    single H2 node: N instances started while it runs, each on a fresh, warmed-up engine."""
    n = args.cluster_instances
    log(f"=== one node: PostgreSQL vs H2, camunda-worker (defaults), {n} instances")
    out = {"instances": n, "warmup": args.warmup, "java_opts": JAVA_OPTS, "loadavg_before": loadavg(),
           "started_at": time.time(), "runs": {}}
    limit = int((120 + n * 0.5) * 2 + 300)
    pg = Cluster(args.cluster_base_port, 1, workdir)
    for db, eng in (("postgres", pg), ("h2", engine)):
        spec = dict(contenders(paths, eng.url, eng.port, args.metrics_port, limit)["cw-default"])
        spec["label"] = f"camunda-worker (defaults) on one node, {'PostgreSQL' if db == 'postgres' else 'H2 in memory'}"
        try:
            out["runs"][db] = run_contender("cw-default", spec, eng, paths, args, workdir, phases=("throughput",), n=n,
                                            fresh=True, tag=f"{db}-cw-default")
            out["runs"][db]["database"] = db
        except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
            log(f"{db} failed: {e}")
            out["runs"][db] = {"key": "cw-default", "label": spec["label"], "database": db, "error": str(e)}
        finally:
            eng.stop()
    out["loadavg_after"] = loadavg()
    out["finished_at"] = time.time()
    return out
