"""The BENCHMARKS.md sections that set two builds side by side, each written only from results.json:
"The ledger's price" (the marker, cw-default, against the look-up build, cw-lookup, by history
level, and the request rate with every follow-up undeliverable) and "The structure's price" (the
structure refactor's build, cw-structure, against its parent, cw-lookup, over --rounds rounds), and
"The ledger's parts" (the ceiling client writing the ledger one part at a time, by history level),
and "Draining at the default and at fixed settings" (camunda-worker's --max-tasks)."""

from .contenders import LOOKUP_REV, STRUCTURE_REV

LEDGER_MARKERS = ("<!-- ledger:begin -->", "<!-- ledger:end -->")
STRUCTURE_MARKERS = ("<!-- structure:begin -->", "<!-- structure:end -->")
COMPARE_MARKERS = ("<!-- compare:begin -->", "<!-- compare:end -->")
LEDGER_PARTS_MARKERS = ("<!-- ledger-parts:begin -->", "<!-- ledger-parts:end -->")
MAX_TASKS_MARKERS = ("<!-- max-tasks:begin -->", "<!-- max-tasks:end -->")


def fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)



def mismatch_line(mm):
    what = (f"Every follow-up undeliverable (`--message-name no_such_message --correlation-timeout 1h`, "
            f"{mm['instances']} instances waiting, pending follow-ups capacity {mm['capacity']}"
            f"{' (the default)' if mm.get('capacity_is_default') else ' (quick run; the default is 4096)'}): ")
    if "status_kib" not in mm:
        return what + f"failed: {mm.get('error', 'no measurement')}."
    st, mt, hold = mm["status_kib"], mm.get("metrics", {}), mm.get("hold", {})
    pending = mt.get("follow_ups_pending")
    text = (f"peak RSS {st['VmHWM'] / 1024:.1f} MiB with {fmt(int(pending) if pending is not None else None)} "
            f"follow-ups pending (VmRSS {st['VmRSS'] / 1024:.1f} MiB: anonymous {st['RssAnon'] / 1024:.1f}, "
            f"file {st['RssFile'] / 1024:.1f}); {fmt(int(mt['tasks_completed_total']) if mt.get('tasks_completed_total') is not None else None)} "
            f"tasks completed; ")
    if mm.get("fetch_paused"):
        text += f"fetching paused {mm['paused_after_s']:g} s after the start"
    else:
        text += f"**fetching did not pause** ({mm.get('error')})"
    fa = mm.get("first_attempts")
    if fa:
        text += (f"; every pending follow-up had made its first attempt {fmt(fa['done_after_pause_s'])} s after that "
                 f"({fmt(int(fa['count']))}/{fmt(int(fa['pending']))}; first attempts {fmt(fa['mean_lateness_s'], 2)} s "
                 f"late on average, the delay error of `camunda_worker_follow_up_delay_error_seconds`)")
    if hold:
        when = (f"from {mm['settle_s']:g} s after that, for {mm['hold_s']:g} s" if mm.get("settle_s") is not None
                else f"over the following {mm['hold_s']:g} s")
        text += (f"; {when}{',' if mm.get('settle_s') is not None else ''} it used {hold.get('core_percent')} % of a core and sent "
                 f"{fmt(hold.get('requests_per_s'))} requests/s to the engine "
                 f"({', '.join(f'{k} {v}' for k, v in (hold.get('engine_requests') or {}).items()) or 'none'})")
        budget = mt.get("retry_budget_per_second")
        if hold.get("retry_budget_spent_per_s") is not None:
            text += (f"; retry budget spent {fmt(hold['retry_budget_spent_per_s'], 2)}/s of "
                     f"{fmt(int(budget) if budget is not None else None)}/s")
    return what + text + "."


def runs_by_history_level(res):
    """{level: {key: run}}: the first level's runs are res["runs"], the others' in
    res["runs_at_other_history_levels"] (a results.json without levels: {"full": res["runs"]})."""
    levels = res.get("history_levels") or ["full"]
    out = {levels[0]: res.get("runs") or {}}
    out.update(res.get("runs_at_other_history_levels") or {})
    return out


def ledger_section(res, with_mismatch=True):
    """Markdown for "The ledger's price": per history level, each contender's throughput,
    requests and engine CPU per instance; the marker (cw-default) against the look-up build
    (cw-lookup) side by side; the request rate with every follow-up undeliverable."""
    by_level = runs_by_history_level(res)
    windows = res.get("phase_windows") or {}
    th = windows.get("throughput", {})
    lines = [f"Run of {res['started']} (`{res.get('command', '')}`): at each history level, each contender on a "
             f"fresh engine warmed with {res.get('warmup', 0)} instances; N = {res['instances']} instances started "
             f"while it runs (phase 1), then {res['paced_count']} paced, then a backlog of {res['backlog']} drained "
             f"(phase 3). Whole run {res.get('total_seconds', 0) / 60:.1f} min; load average (1, 5, 15 min) "
             f"{res['loadavg_start']} at the start"
             + (f", {th['loadavg_before']} → {th['loadavg_after']} over the throughput runs" if th else "")
             + ". The machine was shared with other work: read the ratios."]
    lines.append("")
    lines.append("| history level | contender | instances/s | × ceiling | requests/instance | engine CPU ms/instance "
                 "| drain instances/s | drain engine CPU ms/instance | requests by endpoint (phase 1) "
                 "| load average before |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---|---|")
    for level, runs in by_level.items():
        ceiling = runs.get("ceiling", {}).get("throughput", {}).get("instances_per_s")
        for r in runs.values():
            t, b = r.get("throughput", {}), r.get("backlog", {})
            ips = t.get("instances_per_s")
            note = ""
            if r.get("error"):
                note = f" (failed: {r['error'][:80]})"
            elif not t.get("all_finished"):
                note = f" (only {t.get('finished')}/{res['instances']} finished)"
            elif b and not b.get("all_finished"):
                note = f" (backlog: only {b.get('finished')}/{res['backlog']} finished)"
            reqs = ", ".join(f"{k} {v}" for k, v in (t.get("engine_requests") or {}).items())
            lines.append(f"| {level} | {r['label']}{note} | {fmt(ips)} "
                         f"| {fmt(ips / ceiling if ips and ceiling else None, 2)} "
                         f"| {fmt(t.get('requests_per_instance'), 2)} | {fmt(t.get('engine_cpu_ms_per_instance'), 1)} "
                         f"| {fmt(b.get('drain_instances_per_s'))} | {fmt(b.get('engine_cpu_ms_per_instance'), 1)} "
                         f"| {reqs} | {r.get('loadavg_before') or '–'} |")
    price = []
    for level, runs in by_level.items():
        m, k = runs.get("cw-default", {}), runs.get("cw-lookup", {})
        if m.get("error") or k.get("error") or not m or not k:
            continue

        def pair(phase, field, r1=m, r2=k):
            return r1.get(phase, {}).get(field), r2.get(phase, {}).get(field)

        row = [level]
        for phase in ("throughput", "backlog"):
            a, b = pair(phase, "engine_cpu_ms_per_instance")
            row += [f"{fmt(a, 1)} vs {fmt(b, 1)}",
                    f"{a - b:+.1f} ms ({(a / b - 1) * 100:+.0f} %)" if a is not None and b else "–"]
        a, b = pair("throughput", "requests_per_instance")
        row.append(f"{fmt(a, 2)} vs {fmt(b, 2)}")
        for phase, field in (("throughput", "instances_per_s"), ("backlog", "drain_instances_per_s")):
            a, b = pair(phase, field)
            row.append(f"{a / b:.2f} ×" if a and b else "–")
        price.append("| " + " | ".join(row) + " |")
    if price:
        lines.append("")
        lines.append("The marker (cw-default, this build) against the look-up build (cw-lookup), same engine, same run:")
        lines.append("")
        lines.append("| history level | engine CPU ms/instance, marker vs look-up | difference "
                     "| drain engine CPU ms/instance | difference | requests/instance | instances/s, marker ÷ look-up "
                     "| drain instances/s, marker ÷ look-up |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        lines.extend(price)
    seen = []
    for level, runs in by_level.items():
        recs = [r["history_records_after_warmup"] for r in runs.values() if r.get("history_records_after_warmup")]
        if recs:
            seen.append(f"{level}: external-task log {sorted({x['external_task_log'] for x in recs})}, variable "
                        f"updates {sorted({x['variable_updates'] for x in recs})}")
    if seen:
        lines.append("")
        lines.append("History the engines held after their warm-up (what confirms each level): " + "; ".join(seen) + ".")
    mm = res.get("mismatch")
    if mm and with_mismatch:
        lines.append("")
        lines.append(mismatch_line(mm))
    return "\n".join(lines) + "\n"


def compare_section(res):
    """Markdown for --compare: this tree (cw-default) against the base commit (cw-base), as the
    structure's section lays it out."""
    return structure_section(res, base="cw-base", new="cw-default", base_rev=res.get("base_rev") or "?",
                             new_rev=res.get("new_rev") or "this tree")


# "The structure's price": (what, phase, field, scale, digits); phase None: a field of the run itself.
STRUCTURE_METRICS = [
    ("instances/s (phase 1)", "throughput", "instances_per_s", 1, 1),
    ("drain instances/s (phase 3)", "backlog", "drain_instances_per_s", 1, 1),
    ("engine requests/instance (phase 1)", "throughput", "requests_per_instance", 1, 2),
    ("engine requests/instance (phase 3)", "backlog", "requests_per_instance", 1, 2),
    ("worker CPU ms/instance (phase 1)", "throughput", "contender_cpu_ms_per_instance", 1, 2),
    ("worker CPU ms/instance (phase 3)", "backlog", "contender_cpu_ms_per_instance", 1, 2),
    ("engine CPU ms/instance (phase 1)", "throughput", "engine_cpu_ms_per_instance", 1, 1),
    ("engine CPU ms/instance (phase 3)", "backlog", "engine_cpu_ms_per_instance", 1, 1),
    ("paced p99 ms (phase 2)", "paced", "latency_ms.p99", 1, 1),
    ("peak RSS MiB (whole run)", None, "peak_rss_kib", 1 / 1024, 1),
]


def rounds_of(res):
    """The first history level's runs, one {key: run} per round (res["runs"] first)."""
    level = (res.get("history_levels") or ["full"])[0]
    return [res.get("runs") or {}] + list((res.get("runs_more_rounds") or {}).get(level, []))


def metric(run, phase, field, scale):
    """One measured value of a run that finished (None when it failed, did not finish, or lacks it)."""
    if not run or run.get("error") or not run.get("throughput", {}).get("all_finished"):
        return None
    v = run if phase is None else run.get(phase, {})
    if phase == "backlog" and not v.get("all_finished"):
        return None
    for part in field.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return v * scale if isinstance(v, (int, float)) else None


# The columns of the tables of every run: (header, cell of a run's phase 1 `t`, its drain `bl`, the run `r`).
RUN_COLUMNS = {
    "instances/s": lambda t, bl, r: fmt(t.get("instances_per_s")),
    "drain instances/s": lambda t, bl, r: fmt(bl.get("drain_instances_per_s")),
    "requests/instance": lambda t, bl, r: fmt(t.get("requests_per_instance"), 2),
    "worker CPU ms/instance": lambda t, bl, r: fmt(t.get("contender_cpu_ms_per_instance"), 2),
    "engine CPU ms/instance": lambda t, bl, r: fmt(t.get("engine_cpu_ms_per_instance"), 1),
    "drain engine CPU ms/instance": lambda t, bl, r: fmt(bl.get("engine_cpu_ms_per_instance"), 1),
    "peak RSS MiB": lambda t, bl, r: fmt((r.get("peak_rss_kib") or 0) / 1024 or None),
}


def runs_table(res, labelled_rounds, lead, columns):
    """Markdown rows of every run, a row each: `labelled_rounds` is [(lead cells, {key: run})] with `lead`
    their headers, then the contender (with a note when it failed or did not finish), the `columns` (names
    of RUN_COLUMNS), and the load average before → after."""
    lines = ["| " + " | ".join(lead + ["contender"] + columns + ["load average before → after"]) + " |",
             "|" + "---:|" * len(lead) + "---|" + "---:|" * len(columns) + "---|"]
    for cells, rs in labelled_rounds:
        for key, r in rs.items():
            t, bl = r.get("throughput", {}), r.get("backlog", {})
            note = f" (failed: {r['error'][:80]})" if r.get("error") else (
                f" (only {t.get('finished')}/{res['instances']} finished)" if not t.get("all_finished") else "")
            row = cells + [f"{key}{note}"] + [RUN_COLUMNS[c](t, bl, r) for c in columns]
            lines.append("| " + " | ".join(row) + f" | {r.get('loadavg_before') or '–'} → {r.get('loadavg_after') or '–'} |")
    return lines


def spread_cell(vals, nd):
    if not vals:
        return "–"
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return fmt(float(mean), nd)
    return f"{mean:.{nd}f} ({min(vals):.{nd}f}–{max(vals):.{nd}f})"


def structure_section(res, base="cw-lookup", new="cw-structure", base_rev=LOOKUP_REV, new_rev=STRUCTURE_REV):
    """Markdown for "The structure's price": per metric, the mean over the rounds of each build, its
    range (min–max over the rounds), the ratio of the means, and whether the two ranges overlap (the
    difference within what the same build varied by between rounds); then each round's runs with
    the load average around them."""
    rounds = rounds_of(res)
    cores = (res.get("machine") or {}).get("cores") or 0
    th = (res.get("phase_windows") or {}).get("throughput", {})
    lines = [f"Run of {res['started']} (`{res.get('command', '')}`): {len(rounds)} round(s), the two builds in "
             f"alternating order (round 1 {base} first, round 2 {new} first, …), each run on a fresh engine "
             f"(history level {(res.get('history_levels') or ['full'])[0]}) warmed with {res.get('warmup', 0)} "
             f"instances; N = {res['instances']} instances started while it runs (phase 1), then "
             f"{res['paced_count']} paced at {res['paced_rate']:g}/s (phase 2), then a backlog of {res['backlog']} "
             f"drained (phase 3). Whole run {res.get('total_seconds', 0) / 60:.1f} min; load average (1, 5, 15 min) "
             f"{res['loadavg_start']} at the start"
             + (f", {th['loadavg_before']} → {th['loadavg_after']} over the runs" if th else "") + "."]
    starts = [r.get("loadavg_before") for rs in rounds for r in rs.values() if r.get("loadavg_before")]
    if cores and starts:
        high = sum(1 for la in starts if la[0] > cores)
        if high:
            lines[0] += (f" The 1-minute load average was above the machine's {cores} cores at the start of {high} "
                         f"of the {len(starts)} runs: other work shared the machine, so absolute numbers are low "
                         f"and vary from run to run; read the ratios against the spread between rounds.")
    lines += ["", (f"| measured | {base} ({base_rev}) | {new} ({new_rev}) | {new} ÷ {base} "
                  f"| spread between rounds | difference within the spread |"),
              "|---|---:|---:|---:|---:|---|"]
    inside, outside = [], []
    for what, phase, field, scale, nd in STRUCTURE_METRICS:
        a = [v for v in (metric(rs.get(base), phase, field, scale) for rs in rounds) if v is not None]
        b = [v for v in (metric(rs.get(new), phase, field, scale) for rs in rounds) if v is not None]
        ma, mb = (sum(a) / len(a) if a else None), (sum(b) / len(b) if b else None)
        ratio = f"{mb / ma:.2f} ×" if ma and mb is not None else "–"
        spreads = [(max(v) - min(v)) / (sum(v) / len(v)) * 100 for v in (a, b) if len(v) > 1 and sum(v)]
        spread = f"up to {max(spreads):.0f} %" if spreads else "–"
        if len(a) > 1 and len(b) > 1:
            overlap = min(b) <= max(a) and min(a) <= max(b)
            verdict = "yes: the ranges overlap" if overlap else "no: the ranges are apart"
            (inside if overlap else outside).append(f"{what} {ratio}")
        else:
            verdict = "– (one round: no spread measured)"
        lines.append(f"| {what} | {spread_cell(a, nd)} | {spread_cell(b, nd)} | {ratio} | {spread} | {verdict} |")
    lines += ["", ("Mean over the rounds, (min–max) over the rounds; spread: the larger of the two builds' "
                  "(max − min) ÷ mean.")]
    if inside or outside:
        text = f"{len(inside)} of {len(inside) + len(outside)} measures within the spread between rounds"
        lines += ["", text + (f"; outside it: {', '.join(outside)}." if outside else ".")]
    lines += [""] + runs_table(res, [([str(i)], rs) for i, rs in enumerate(rounds, 1)], ["round"],
                               ["instances/s", "drain instances/s", "requests/instance", "worker CPU ms/instance",
                                "engine CPU ms/instance", "peak RSS MiB"])
    return "\n".join(lines) + "\n"


def rounds_at(res, level):
    """The runs at history `level`, one {key: run} per round (the first round's, then --rounds')."""
    return ([runs_by_history_level(res).get(level) or {}]
            + list((res.get("runs_more_rounds") or {}).get(level, [])))


# "The ledger's parts": (what, phase, field, digits).
LEDGER_PARTS_METRICS = [
    ("engine CPU ms/instance (phase 1)", "throughput", "engine_cpu_ms_per_instance", 1),
    ("instances/s (phase 1)", "throughput", "instances_per_s", 1),
    ("engine CPU ms/instance (drain)", "backlog", "engine_cpu_ms_per_instance", 1),
    ("drain instances/s", "backlog", "drain_instances_per_s", 1),
]


def ledger_parts_section(res, parts=("ceiling", "ceiling-marker", "ceiling-keys", "ceiling-flip",
                                     "ceiling-instance")):
    """Markdown for "The ledger's parts": at each history level, the ceiling client writing
    camunda-worker's ledger one part more at a time; per part and metric the mean over the rounds with
    its range (min–max), and the step from the part before: the difference of the means, and whether
    the two parts' ranges are apart (a step inside the spread between rounds is not measured)."""
    th = (res.get("phase_windows") or {}).get("throughput", {})
    levels = res.get("history_levels") or ["full"]
    n_rounds = res.get("rounds") or 1
    lines = [f"Run of {res['started']} (`{res.get('command', '')}`): at each history level ({', '.join(levels)}), "
             f"{n_rounds} round(s) of the ceiling client at each part of the ledger, in alternating order (round 1 "
             f"from no ledger up, round 2 down, …), each run on a fresh engine warmed with {res.get('warmup', 0)} "
             f"instances; N = {res['instances']} instances started while it runs (phase 1), then a backlog of "
             f"{res['backlog']} drained. Whole run {res.get('total_seconds', 0) / 60:.1f} min; load average "
             f"(1, 5, 15 min) {res['loadavg_start']} at the start"
             + (f", {th['loadavg_before']} → {th['loadavg_after']} over the runs" if th else "") + "."]
    cores = (res.get("machine") or {}).get("cores") or 0
    starts = [r.get("loadavg_before") for level in levels for rs in rounds_at(res, level) for r in rs.values()
              if r.get("loadavg_before")]
    high = sum(1 for la in starts if cores and la[0] > cores)
    if high:
        lines[0] += (f" The 1-minute load average was above the machine's {cores} cores at the start of {high} of "
                     f"the {len(starts)} runs.")
    lines += ["", ("Each part includes the ones above it; mean over the rounds (min–max); step: the difference "
                   "from the part above, and whether their ranges are apart."), ""]
    header = "| history level | ledger written |" + "".join(f" {what} | step |" for what, *_ in LEDGER_PARTS_METRICS)
    lines += [header, "|---|---|" + "---:|---|" * len(LEDGER_PARTS_METRICS)]
    for level in levels:
        rounds = rounds_at(res, level)
        before = None
        for key in parts:
            label = next((rs[key]["label"] for rs in rounds if key in rs), key)
            cells, values = [], {}
            for what, phase, field, nd in LEDGER_PARTS_METRICS:
                vals = [v for v in (metric(rs.get(key), phase, field, 1) for rs in rounds) if v is not None]
                values[what] = vals
                step = "–"
                prev = (before or {}).get(what)
                if vals and prev:
                    diff = sum(vals) / len(vals) - sum(prev) / len(prev)
                    apart = len(vals) > 1 and len(prev) > 1 and (min(vals) > max(prev) or max(vals) < min(prev))
                    step = f"{diff:+.{nd}f}" + (" (apart)" if apart else " (within)" if len(vals) > 1 else "")
                cells.append(f" {spread_cell(vals, nd)} | {step} |")
            lines.append(f"| {level} | {label} |" + "".join(cells))
            before = values
    others = [key for key in dict.fromkeys(k for level in levels for rs in rounds_at(res, level) for k in rs)
              if key not in parts]
    if others:
        lines += ["", ("Beside them in the same run, the other contenders (camunda-worker: its whole ledger and "
                       "everything else it does; the other clients write no ledger); ÷ ceiling: the ratio of the "
                       "means, and whether the ranges are apart."), ""]
        lines += ["| history level | contender |" + "".join(f" {what} | ÷ ceiling |" for what, *_ in
                                                             LEDGER_PARTS_METRICS),
                  "|---|---|" + "---:|---|" * len(LEDGER_PARTS_METRICS)]
        for level in levels:
            rounds = rounds_at(res, level)
            for key in others:
                label = next((rs[key]["label"] for rs in rounds if key in rs), key)
                cells = []
                for what, phase, field, nd in LEDGER_PARTS_METRICS:
                    vals = [v for v in (metric(rs.get(key), phase, field, 1) for rs in rounds) if v is not None]
                    base = [v for v in (metric(rs.get(parts[0]), phase, field, 1) for rs in rounds) if v is not None]
                    ratio = "–"
                    if vals and base and sum(base):
                        apart = len(vals) > 1 and len(base) > 1 and (min(vals) > max(base) or max(vals) < min(base))
                        ratio = (f"{(sum(vals) / len(vals)) / (sum(base) / len(base)):.2f} ×"
                                 + (" (apart)" if apart else " (within)" if len(vals) > 1 else ""))
                    cells.append(f" {spread_cell(vals, nd)} | {ratio} |")
                lines.append(f"| {level} | {label} |" + "".join(cells))
    labelled = [([level, str(i)], rs) for level in levels for i, rs in enumerate(rounds_at(res, level), 1)]
    lines += [""] + runs_table(res, labelled, ["history level", "round"],
                               ["instances/s", "engine CPU ms/instance", "requests/instance", "drain instances/s",
                                "drain engine CPU ms/instance"])
    return "\n".join(lines) + "\n"


# "Draining at the default and at fixed settings": (what, phase, field, scale, digits).
MAX_TASKS_METRICS = [
    ("drain instances/s", "backlog", "drain_instances_per_s", 1, 1),
    ("drain engine CPU ms/instance", "backlog", "engine_cpu_ms_per_instance", 1, 1),
    ("drain requests/instance", "backlog", "requests_per_instance", 1, 2),
    ("instances/s (phase 1)", "throughput", "instances_per_s", 1, 1),
    ("engine CPU ms/instance (phase 1)", "throughput", "engine_cpu_ms_per_instance", 1, 1),
    ("peak RSS MiB", None, "peak_rss_kib", 1 / 1024, 1),
]


def max_tasks_section(res, default="cw-default"):
    """Markdown for "Draining at the default and at fixed settings": camunda-worker at its defaults
    and at fixed --max-tasks values (and the ceiling), over --rounds rounds in alternating order; per
    contender and metric the mean with its range, and the default's drain against the best fixed
    setting's."""
    level = (res.get("history_levels") or ["full"])[0]
    rounds = rounds_at(res, level)
    keys = list(dict.fromkeys(k for rs in rounds for k in rs))
    th = (res.get("phase_windows") or {}).get("throughput", {})
    lines = [f"Run of {res['started']} (`{res.get('command', '')}`): {len(rounds)} round(s), the contenders in "
             f"alternating order, each run on a fresh engine (history level {level}) warmed with "
             f"{res.get('warmup', 0)} instances; N = {res['instances']} instances started while it runs (phase 1), "
             f"then a backlog of {res['backlog']} started while it is stopped (SIGSTOP) and drained once it goes on "
             f"(the drain). Whole run {res.get('total_seconds', 0) / 60:.1f} min; load average (1, 5, 15 min) "
             f"{res['loadavg_start']} at the start"
             + (f", {th['loadavg_before']} → {th['loadavg_after']} over the runs" if th else "") + ".", ""]
    lines += ["| contender |" + "".join(f" {what} |" for what, *_ in MAX_TASKS_METRICS),
              "|---|" + "---:|" * len(MAX_TASKS_METRICS)]
    drains = {}
    for key in keys:
        label = next((rs[key]["label"] for rs in rounds if key in rs), key)
        cells = []
        for what, phase, field, scale, nd in MAX_TASKS_METRICS:
            vals = [v for v in (metric(rs.get(key), phase, field, scale) for rs in rounds) if v is not None]
            if field == "drain_instances_per_s" and vals:
                drains[key] = vals
            cells.append(f" {spread_cell(vals, nd)} |")
        lines.append(f"| {label} |" + "".join(cells))
    fixed = {k: v for k, v in drains.items() if k.startswith("cw-fixed-")}
    if default in drains and fixed:
        best = max(fixed, key=lambda k: sum(fixed[k]) / len(fixed[k]))
        mean = sum(drains[default]) / len(drains[default])
        best_mean = sum(fixed[best]) / len(fixed[best])
        lines += ["", (f"Draining, the default ({default}) against the best fixed setting of the run ({best}): "
                       f"{mean:.1f} ÷ {best_mean:.1f} = **{mean / best_mean:.2f} ×** (means over the rounds; "
                       f"ranges {spread_cell(drains[default], 1)} and {spread_cell(fixed[best], 1)}).")]
    lines += [""] + runs_table(res, [([str(i)], rs) for i, rs in enumerate(rounds, 1)], ["round"],
                               ["drain instances/s", "drain engine CPU ms/instance", "instances/s",
                                "engine CPU ms/instance", "peak RSS MiB"])
    return "\n".join(lines) + "\n"
