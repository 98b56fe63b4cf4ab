"""The report written from results.json: summary.md (results tables, the marker against the look-up
build by history level, the structure's price, idle, overhead, mismatch, cluster, machine, targets
met or missed), the results section of BENCHMARKS.md (any section, with its markers), and the
charts; the comparisons of two builds are in `comparisons`.

It reads only the results dict, never the machine, so `--report-only` rewrites the same report
from a stored results.json."""

import os

from .charts import chart, cluster_chart
from .common import REPO
from .comparisons import compare_section, fmt, ledger_section, mismatch_line, structure_section

RESULTS_MARKERS = ("<!-- results:begin -->", "<!-- results:end -->")


def per_min(counts, minutes):
    return ", ".join(f"{k} {v / minutes:.2f}" for k, v in counts.items()) or "none"


def summarize(res):
    """Markdown: results tables, idle, overhead, mismatch, cluster, targets."""
    runs = res.get("runs") or {}

    def get(key, phase, field):
        return runs.get(key, {}).get(phase, {}).get(field)

    ceiling = get("ceiling", "throughput", "instances_per_s")
    ceiling_drain = get("ceiling", "backlog", "drain_instances_per_s")
    lines = []
    skipped = f" Phases skipped: {', '.join(res['skipped'])}." if res.get("skipped") else ""
    if runs:
        lines.append(f"Run of {res['started']}: fresh engine per contender, warmed with {res.get('warmup', 0)} "
                     f"instances (not counted); N = {res['instances']} instances started while the contender runs, "
                     f"then {res['paced_count']} paced at {res['paced_rate']:g}/s, then a backlog of {res['backlog']} "
                     f"drained; correlation delay 2 s; load average before the run {res['loadavg_start']}; "
                     f"whole run {res.get('total_seconds', 0) / 60:.1f} min. Absolute numbers are this machine's."
                     + skipped)
    else:
        lines.append(f"Run of {res['started']}: load average before the run {res['loadavg_start']}; whole run "
                     f"{res.get('total_seconds', 0) / 60:.1f} min. Absolute numbers are this machine's." + skipped)
    for phase in ("idle", "overhead"):
        if res.get(f"{phase}_error"):
            lines.append("")
            lines.append(f"**The {phase} phase failed**: {res[f'{phase}_error'][:300]}")
    if runs:
        lines.append("")
        lines.append("| contender | wall s | instances/s | × ceiling | backlog drain instances/s | × ceiling "
                     "| contender CPU ms/instance | engine CPU ms/instance | contender ÷ engine CPU | peak RSS MiB |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in runs.values():
            t = r.get("throughput", {})
            b = r.get("backlog", {})
            ips, dips = t.get("instances_per_s"), b.get("drain_instances_per_s")
            note = ""
            if r.get("error"):
                note = f" (failed: {r['error'][:80]})"
            elif not t.get("all_finished"):
                note = f" (only {t.get('finished')}/{res['instances']} finished)"
            elif b and not b.get("all_finished"):
                note = f" (backlog: only {b.get('finished')}/{res['backlog']} finished)"
            ratio = t.get("cpu_ratio_contender_to_engine")
            lines.append(
                f"| {r['label']}{note} | {fmt(t.get('wall_s'))} | {fmt(ips)} "
                f"| {fmt(ips / ceiling if ips and ceiling else None, 2)} "
                f"| {fmt(dips)} | {fmt(dips / ceiling_drain if dips and ceiling_drain else None, 2)} "
                f"| {fmt(t.get('contender_cpu_ms_per_instance'), 2)} | {fmt(t.get('engine_cpu_ms_per_instance'), 1)} "
                f"| {fmt(ratio * 100 if ratio is not None else None, 1)} % | {fmt((r.get('peak_rss_kib') or 0) / 1024)} |")
        lines.append("")
        lines.append("| contender | requests/instance | p50 ms | p99 ms | paced p50 ms | paced p99 ms | requests by endpoint |")
        lines.append("|---|---:|---:|---:|---:|---:|---|")
        for r in runs.values():
            t = r.get("throughput", {})
            p = r.get("paced", {})
            reqs = ", ".join(f"{k} {v}" for k, v in (t.get("engine_requests") or {}).items())
            lines.append(f"| {r['label']} | {fmt(t.get('requests_per_instance'), 2)} "
                         f"| {fmt(t.get('latency_ms', {}).get('p50'))} | {fmt(t.get('latency_ms', {}).get('p99'))} "
                         f"| {fmt(p.get('latency_ms', {}).get('p50'))} | {fmt(p.get('latency_ms', {}).get('p99'))} "
                         f"| {reqs} |")
        cw_metrics = [(k, r["throughput"].get("worker_metrics_requests")) for k, r in runs.items()
                      if k.startswith("cw-") and r.get("throughput", {}).get("worker_metrics_requests")]
        if cw_metrics:
            lines.append("")
            lines.append("camunda-worker's own request counters in the same window: "
                         + "; ".join(f"{k}: {v}" for k, v in cw_metrics) + ".")
    if res.get("idle"):
        idle = res["idle"]
        w = idle.get("window") or [0, idle["seconds"]]
        minutes = (w[1] - w[0]) / 60 or 1
        lines.append("")
        settle = f"after {idle['settle_s']:g} s of settling, " if idle.get("settle_s") is not None else ""
        lines.append(f"Idle (no work, all at once on one engine; {settle}a window of {idle['seconds']:g} s):")
        lines.append("")
        lines.append("| contender | requests/min | per endpoint, per min | CPU s | % of a core | RSS MiB |")
        lines.append("|---|---:|---|---:|---:|---:|")
        for c in idle["contenders"].values():
            lines.append(f"| {c['label']} | {fmt(c['requests_per_min'], 2)} | {per_min(c['engine_requests'], minutes)} | "
                         f"{fmt(c['cpu_s'], 3)} | {fmt(c['core_percent'], 3)} % | {fmt(c['rss_kib'] / 1024)} |")
        su = idle.get("startup")
        if su:
            label = idle["contenders"].get(su["key"], {}).get("label", su["key"])
            lines.append(f"| {label}: start-up, its first {su['seconds']:g} s | {fmt(su['requests_per_min'], 2)} "
                         f"| {per_min(su['engine_requests'], su['seconds'] / 60 or 1)} | | | |")
    if res.get("overhead"):
        lines.append("")
        lines.append("camunda-worker against the fake engine (canned replies, no JVM, --correlation-delay 0s):")
        lines.append("")
        lines.append("| --max-tasks | tasks/s (wall) | worker cores busy | tasks per CPU-second | CPU µs per task "
                     "| requests/task | peak RSS MiB |")
        lines.append("|---:|---:|---:|---:|---:|---:|---:|")
        for o in res["overhead"]:
            lines.append(f"| {o['max_tasks']} | {fmt(o['tasks_per_s'], 0)} | {fmt(o['worker_cores'], 2)} "
                         f"| {fmt(o['tasks_per_cpu_s'], 0)} | {fmt(o['cpu_us_per_task'])} "
                         f"| {fmt(o['requests_per_task'], 2)} | {fmt(o['peak_rss_kib'] / 1024)} |")
    if ("cw-lookup" in runs and "cw-default" in runs) or len(res.get("history_levels") or []) > 1:
        lines.append("")
        lines.append("### The marker against the look-up build, by history level")
        lines.append("")
        lines.append(ledger_section(res, with_mismatch=False).rstrip("\n"))
    if "cw-lookup" in runs and "cw-structure" in runs:
        lines.append("")
        lines.append("### The structure's price")
        lines.append("")
        lines.append(structure_section(res).rstrip("\n"))
    if "cw-base" in runs and "cw-default" in runs:
        lines.append("")
        lines.append(f"### This tree against {res.get('base_rev') or 'its base'}")
        lines.append("")
        lines.append(compare_section(res).rstrip("\n"))
    mm = res.get("mismatch")
    if mm:
        lines.append("")
        lines.append(mismatch_line(mm))
    cl = res.get("cluster")
    if cl:
        lines.extend(cluster_lines(cl, res.get("machine", {})))
    m = res["machine"]
    lines.append("")
    lines.append(f"Machine: {m['cores']} cores ({m['cpu_model']}), {m['mem_gib']:g} GiB RAM, {m['os']}, "
                 f"Linux {m['kernel']}; {m['java']}; {m['maven']}; Python {m['python']}; Node {m['node']}; "
                 f"{m['rust']}; {m['camunda_worker']}; engine: {m['engine']}"
                 + (f"; cluster: {m['postgres']}, {m['haproxy']}" if cl and m.get("postgres") else "") + ".")
    lines.append("")
    lines.append("Targets (camunda-worker at its defaults):")
    lines.append("")
    for name, ok, detail in targets(res):
        mark = "met" if ok else "missed"
        lines.append(f"- **{mark}**: {name}: {detail}")
    return "\n".join(lines) + "\n"


def cluster_lines(cl, machine):
    lines = []
    if "runs" in cl:
        lines.extend(two_node_lines(cl))
    pv = cl.get("pg_vs_h2")
    if pv:
        lines.extend(pg_vs_h2_lines(pv, machine))
    return lines


def two_node_lines(cl):
    lines = [""]
    n, rate, cnt = cl["instances"], cl["pickup_rate"], cl["pickup_count"]
    lines.append(f"Cluster (2 nodes on PostgreSQL, HAProxy round robin): one cluster for all contenders, one "
                 f"contender at a time, warmed with {cl.get('warmup', 0)} instances through the LB; JVM "
                 f"{cl['java_opts']}; load average {cl.get('loadavg_before')} before, {cl.get('loadavg_after')} after. "
                 f"Pickup: {cnt} instances started at {rate:g}/s, each on a node picked at random (seeded: the "
                 f"same sequence of nodes for every contender), on that node's own URL — through the LB's strict "
                 f"round robin, the node of a start would depend on the parity of the contender's own requests "
                 f"through the LB in between; per instance, its external task's successLog − creationLog timestamp "
                 f"from `/history/external-task-log`, i.e. the time until the task was picked up plus one "
                 f"complete call. Sparse: {cl.get('sparse_count', 0)} instances, one every "
                 f"{cl.get('sparse_interval_s', 0):g} s, the same way. Throughput: {n} instances started through the "
                 f"LB while the contender runs (first start to last end).")
    if cl.get("error"):
        lines.append("")
        lines.append(f"**The cluster phase failed**: {cl['error'][:300]}")
    runs = cl.get("runs", {})
    ceiling = runs.get("ceiling", {}).get("throughput", {}).get("instances_per_s")
    if runs:
        lines.append("")
        lines.append("| contender | pickup p50 ms | p90 | p99 | max | sparse p50 ms | sparse p99 | sparse max "
                     "| instances/s | × ceiling (LB) |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in runs.values():
            pk, sp = r.get("pickup", {}), r.get("pickup_sparse", {})
            pm, sm = pk.get("pickup_ms", {}), sp.get("pickup_ms", {})
            t = r.get("throughput", {})
            ips = t.get("instances_per_s")
            notes = []
            if r.get("error"):
                notes.append(f"failed: {r['error'][:80]}")
            for what, ph in (("pickup", pk), ("sparse", sp)):
                if ph and (not ph.get("all_finished") or ph.get("missing")):
                    notes.append(f"{what}: {ph.get('measured')}/{ph.get('count')} measured")
            if t and not t.get("all_finished"):
                notes.append(f"only {t.get('finished')}/{n} finished")
            note = f" ({'; '.join(notes)})" if notes else ""
            lines.append(f"| {r['label']}{note} | {fmt(pm.get('p50'))} | {fmt(pm.get('p90'))} | {fmt(pm.get('p99'))} "
                         f"| {fmt(pm.get('max'))} | {fmt(sm.get('p50'))} | {fmt(sm.get('p99'))} | {fmt(sm.get('max'))} "
                         f"| {fmt(ips)} | {fmt(ips / ceiling if ips and ceiling else None, 2)} |")
    return lines


def pg_vs_h2_lines(pv, machine):
    lines = []
    if pv:
        lines.append("")
        lines.append(f"One node: PostgreSQL vs H2 (camunda-worker at its defaults, {pv['instances']} instances started "
                     f"while it runs, each on a fresh engine warmed with {pv.get('warmup', 0)} instances; same JVM "
                     f"options; PostgreSQL with fsync, synchronous_commit and full_page_writes off, as engine.sh sets "
                     f"it up; the node's own URL, no LB):")
        lines.append("")
        lines.append("| database | instances/s | wall s | engine JVM CPU ms/instance | PostgreSQL CPU ms/instance "
                     "| worker CPU ms/instance | requests/instance |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for db, r in pv.get("runs", {}).items():
            t = r.get("throughput", {})
            parts = t.get("engine_cpu_parts_ms_per_instance") or {}
            jvm = parts.get("jvm", t.get("engine_cpu_ms_per_instance"))
            name = {"postgres": machine.get("postgres") or "PostgreSQL", "h2": "H2 (in memory, in the engine's JVM)"}[db]
            note = f" (failed: {r['error'][:80]})" if r.get("error") else (
                f" (only {t.get('finished')}/{pv['instances']} finished)" if t and not t.get("all_finished") else "")
            lines.append(f"| {name}{note} | {fmt(t.get('instances_per_s'))} | {fmt(t.get('wall_s'))} | {fmt(jvm, 1)} "
                         f"| {fmt(parts.get('postgres') if db == 'postgres' else None, 1)} "
                         f"| {fmt(t.get('contender_cpu_ms_per_instance'), 2)} | {fmt(t.get('requests_per_instance'), 2)} |")
    return lines


def targets(res):
    runs = res.get("runs") or {}

    def get(key, phase, field):
        return runs.get(key, {}).get(phase, {}).get(field)

    out = []
    key = "cw-default"
    if key in runs and not runs[key].get("error"):
        for phase, field, what in (("throughput", "instances_per_s", "instances/s"),
                                   ("backlog", "drain_instances_per_s", "backlog drain instances/s")):
            ips, ceiling, py = get(key, phase, field), get("ceiling", phase, field), get("py-default", phase, field)
            if ips and ceiling:
                out.append((f"{key} {what} ≥ 0.95 × ceiling", ips >= 0.95 * ceiling,
                            f"{ips:.1f} vs {ceiling:.1f} = {ips / ceiling:.2f} ×"))
            if ips and py:
                out.append((f"{key} {what} ≥ 5 × Python client at its defaults", ips >= 5 * py,
                            f"{ips:.1f} vs {py:.1f} = {ips / py:.1f} ×"))
        t = runs[key].get("throughput", {})
        ratio = t.get("cpu_ratio_contender_to_engine")
        if ratio:
            out.append((f"{key} CPU ≤ 1/20 of the engine's", ratio <= 0.05,
                        (f"{t['contender_cpu_ms_per_instance']:.2f} ms vs {t['engine_cpu_ms_per_instance']:.1f} ms "
                         f"per instance = 1/{1 / ratio:.0f}")))
        p = runs[key].get("paced", {})
        p99 = p.get("latency_ms", {}).get("p99")
        if p99 is not None:
            out.append(((f"{key} p99 (completed − started − delay) ≤ 100 ms with the engine not saturated "
                         f"({p['rate']:g} instances/s)"), p99 <= 100,
                        f"p99 {p99:.1f} ms, p50 {p['latency_ms']['p50']:.1f} ms"
                        + (f" (ceiling p99 {get('ceiling', 'paced', 'latency_ms')['p99']:.1f} ms)"
                           if get("ceiling", "paced", "latency_ms") else "")))
        if runs[key].get("peak_rss_kib"):
            rss = runs[key]["peak_rss_kib"] / 1024
            out.append(((f"peak RSS ≤ 15 MiB over the whole run on the real engine ({key}: "
                         f"{runs[key]['label']})"), rss <= 15, f"{rss:.1f} MiB"))
    elif key in runs:
        out.append((f"{key} measured", False, f"failed: {runs[key]['error'][:200]}"))
    if res.get("idle") and "cw-default" in res["idle"]["contenders"]:
        idle = res["idle"]
        c = idle["contenders"]["cw-default"]
        by = ", ".join(f"{k} {v}" for k, v in c["engine_requests"].items())
        settle = f", after {idle['settle_s']:g} s of settling" if idle.get("settle_s") is not None else ""
        out.append((f"idle ≤ 2 requests/min ({idle['seconds']:g} s window{settle})", c["requests_per_min"] <= 2,
                    f"{c['requests_per_min']:.2f}/min ({by or 'none'})"))
        out.append(("idle < 0.1 % of a core", c["core_percent"] < 0.1, f"{c['core_percent']:.3f} %"))
    return out


def update_benchmarks_md(summary, markers=RESULTS_MARKERS):
    """Replaces what BENCHMARKS.md holds between `markers` (the results section, the ledger's, the structure's)."""
    path = os.path.join(REPO, "BENCHMARKS.md")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        text = f.read()
    begin, end = markers
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(head + begin + "\n" + summary + end + tail)
    return True


def write_reports(res, out_dir):
    summary = summarize(res)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(summary)
    chart(res, os.path.join(out_dir, "chart.png"))
    cluster_chart(res, os.path.join(out_dir, "cluster.png"))
    return summary
