"""Dashboard checks: import-ability, layout, Grafana's dashboard-linter rules, metrics contract.

The rules are named as grafana/dashboard-linter names them (template-datasource-rule,
target-counter-agg-rule, ...); see scripts/lint-deploy.sh for why that tool itself is not used.
"""

import json
import re

import promql_parser as pp

from .metrics import series
from .promql import (
    RATE_INTERVAL,
    contract_problems,
    out_labels,
    parse,
    selector_name,
    substitute,
    walk,
)

DS_REF = {"type": "prometheus", "uid": "${datasource}"}
PANEL_TYPES = {"row", "timeseries", "stat", "state-timeline"}
UNITS = {
    "none",
    "short",
    "percent",
    "percentunit",
    "s",
    "ms",
    "µs",
    "ns",
    "m",
    "h",
    "d",
    "dtdurations",
    "ops",
    "reqps",
    "rps",
    "wps",
    "opm",
    "bytes",
    "decbytes",
    "bool",
    "bool_yes_no",
    "dateTimeAsIso",
    "dateTimeFromNow",
}
TARGET_KEYS = {
    "datasource",
    "editorMode",
    "expr",
    "legendFormat",
    "refId",
    "range",
    "instant",
    "interval",
    "format",
    "exemplar",
    "hide",
    "intervalFactor",
}
SCHEMA_VERSIONS = range(39, 42)  # Grafana 10.4 .. 11.x; newer Grafanas migrate on import
# Panels whose queries read counters raw on purpose (exempt from target-counter-agg-rule).
RAW_COUNTER_PANELS = {
    18: "the accounting check compares the counters of one process with its pending follow-ups",
}
# Panels that read per-route counters over every topic on purpose (exempt from the topic rule).
ALL_TOPICS_PANELS = {
    18: "the accounting check compares all of a process's counters with its pending follow-ups",
}
DROPPED_QUERY_VAR_ALL_VALUE = (
    "no allValue: All expands to the values seen, so that `up` (every target of a shared scrape "
    "job has one) stays limited to worker targets"
)


def strict_json(path):
    def pairs(items):
        keys = [k for k, _ in items]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise ValueError(f"duplicate key(s) {sorted(dup)}")
        return dict(items)

    with open(path, encoding="utf-8") as f:
        return json.load(f, object_pairs_hook=pairs)


def all_panels(d):
    for p in d.get("panels", []):
        yield p
        yield from p.get("panels", [])


def dashboard_problems(d):
    problems = []

    def err(where, msg):
        problems.append(f"{where}: {msg}")

    # Import-ability: nothing to map by hand, nothing tied to one Grafana.
    for key in ("__inputs", "__requires", "__elements"):
        if key in d:
            err(
                "dashboard",
                f"has {key} (an 'export for sharing externally' artefact: the import would "
                "ask for a mapping); use the datasource variable instead",
            )
    if d.get("id") is not None:
        err("dashboard", "id must be null (it is the database id of one Grafana)")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", str(d.get("uid", ""))):
        err("dashboard", "uid must be set (1-40 of A-Z a-z 0-9 _ -), so that re-imports overwrite")
    if d.get("schemaVersion") not in SCHEMA_VERSIONS:
        err(
            "dashboard",
            f"schemaVersion {d.get('schemaVersion')} not in "
            f"{SCHEMA_VERSIONS.start}..{SCHEMA_VERSIONS.stop - 1}",
        )
    if not d.get("title"):
        err("dashboard", "has no title")
    if d.get("editable") is not False:
        err(
            "dashboard",
            "uneditable-dashboard: set editable to false (users save a copy to change it)",
        )

    def scan(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                here = f"{path}.{k}"
                if k == "datasource" and v != DS_REF:
                    err(here, f"datasource must be {json.dumps(DS_REF)}, is {json.dumps(v)}")
                elif k == "uid" and path != "$" and node != DS_REF:
                    err(here, f"a hard-coded uid ({v!r})")
                scan(v, here)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                scan(v, f"{path}[{i}]")
        elif isinstance(node, str) and "${DS_" in node:
            err(path, "refers to an __inputs data source placeholder")

    scan(d, "$")

    # Variables (template-datasource, template-job, template-instance,
    # template-on-time-change-reload).
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        err(
            "templating",
            "template-datasource-rule: needs a variable `datasource` of type datasource, "
            "query prometheus",
        )
    elif ds.get("label") != "Data source":
        err("templating.datasource", "label should be 'Data source'")
    elif ds.get("current", {}).get("value"):
        err("templating.datasource", "current value set: it would pin one Grafana's data source")
    if [v for v in variables.values() if v.get("type") == "datasource"] != [ds]:
        err("templating", "exactly one datasource variable expected")
    for name in ("job", "instance", "topic"):
        if name not in variables:
            err("templating", f"template-{name}-rule: no `{name}` variable")
    for name, v in variables.items():
        if v.get("type") != "query":
            continue
        where = f"templating.{name}"
        if v.get("datasource") != DS_REF:
            err(where, "must query the datasource variable")
        if v.get("refresh") != 2:
            err(
                where,
                "template-on-time-change-reload-rule: refresh must be 2 (on time range change)",
            )
        if not v.get("multi") or not v.get("includeAll"):
            err(where, "must be multi-select with All")
        if "allValue" in v:
            err(where, DROPPED_QUERY_VAR_ALL_VALUE)
        if name in ("job", "instance") and v.get("label") != name.title():
            err(where, f"label should be {name.title()!r}")
        query = v.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query or "")
        if not m:
            err(where, f"query should be label_values(<selector>, {name})")
        else:
            ast, error = parse(substitute(m.group(1), variables)[0])
            if error:
                err(where, f"invalid selector in the query: {error}")
            else:
                for problem in contract_problems(ast):
                    err(where, problem)
                if m.group(2) not in out_labels(ast):
                    err(where, f"{m.group(2)!r} is not a label of {m.group(1)}")

    # Panels and layout.
    ids, occupied = {}, {}
    for p in all_panels(d):
        pid = p.get("id")
        where = f"panel {pid} {p.get('title', '')!r}"
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            err(where, "id must be a positive integer")
        elif pid in ids:
            err(where, f"id also used by panel {ids[pid]!r}")
        ids[pid] = p.get("title")
        if p.get("type") not in PANEL_TYPES:
            err(where, f"type {p.get('type')!r} is not one of {sorted(PANEL_TYPES)}")
        g = p.get("gridPos", {})
        if (
            not all(isinstance(g.get(k), int) for k in "xywh")
            or g["w"] < 1
            or g["h"] < 1
            or g["x"] < 0
            or g["y"] < 0
            or g["x"] + g["w"] > 24
        ):
            err(where, f"gridPos {g} outside the 24-column grid")
        else:
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in occupied:
                        err(where, f"overlaps panel {occupied[(x, y)]}")
                        break
                    occupied[(x, y)] = pid
                else:
                    continue
                break
        if p.get("type") == "row":
            if p.get("collapsed") or p.get("panels"):
                err(where, "rows stay expanded, with their panels at the top level")
            continue
        problems.extend(f"{where}: {msg}" for msg in panel_problems(p, variables))
    return problems


def panel_problems(p, variables):
    out = []
    if not p.get("title") or not p.get("description"):
        out.append("panel-title-description-rule: needs a title and a description")
    if p.get("datasource") != DS_REF:
        out.append("panel-datasource-rule: must use the datasource variable")
    unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
    if unit not in UNITS:
        out.append(f"panel-units-rule: unit {unit!r} is not one of {sorted(UNITS)}")
    targets = p.get("targets") or []
    if not targets:
        out.append("panel-no-targets-rule: has no queries")
    ref_ids = [t.get("refId") for t in targets]
    if len(set(ref_ids)) != len(ref_ids) or None in ref_ids:
        out.append(f"refIds must be set and unique: {ref_ids}")
    legends = []  # each legendFormat as a regexp of the series names it yields
    for t in targets:
        out.extend(f"query {t.get('refId')}: {msg}" for msg in target_problems(p, t, variables))
        parts = re.split(r"\{\{\s*\w+\s*\}\}", t.get("legendFormat", ""))
        legends.append(re.compile(".+".join(re.escape(part) for part in parts)))
    for o in p.get("fieldConfig", {}).get("overrides", []):
        matcher = o.get("matcher", {})
        kind, option = matcher.get("id"), matcher.get("options")
        if kind == "byFrameRefID" and option not in ref_ids:
            out.append(f"override for refId {option!r}, which no query has")
        elif kind == "byName" and not any(legend.fullmatch(option or "") for legend in legends):
            out.append(f"override for the series {option!r}, which no query names")
        elif kind == "byRegexp":
            try:
                re.compile(option)
            except re.error as e:
                out.append(f"override regexp {option!r}: {e}")
        elif kind not in ("byFrameRefID", "byName", "byRegexp"):
            out.append(f"override matcher {kind!r} not checked by this lint")
    return out


def target_problems(p, t, variables):
    out = []
    unknown = set(t) - TARGET_KEYS
    if unknown:
        out.append(f"unknown keys {sorted(unknown)}")
    if t.get("datasource") != DS_REF:
        out.append("must use the datasource variable")
    expr = t.get("expr", "")
    if not expr.strip():
        return out + ["has no expr"]
    legend = t.get("legendFormat")
    if not isinstance(legend, str) or not legend.strip():
        out.append("needs a legendFormat")
        legend = ""
    text, problems = substitute(expr, variables)
    out.extend(problems)
    ast, error = parse(text)
    if error:
        return out + [f"target-promql-rule: invalid PromQL: {error}"]
    out.extend(contract_problems(ast))
    for n, parents in walk(ast):
        if isinstance(n, pp.VectorSelector):
            name = selector_name(n)
            s = series(name or "")
            have = {(m.name, str(m.op), m.value) for m in n.matchers.matchers}
            # target-job-rule, target-instance-rule; node for every per-node metric, topic for
            # every per-route one.
            wanted = ["job", "instance"] + (["node"] if s and "node" in s[1] else [])
            if s and "topic" in s[1] and p.get("id") not in ALL_TOPICS_PANELS:
                wanted.append("topic")
            for label in wanted:
                if (label, str(pp.MatchOp.Re), f"${label}") not in have:
                    out.append(f'target-{label}-rule: {name} needs {label}=~"${label}"')
            if name and name.endswith("_total") and p.get("id") not in RAW_COUNTER_PANELS:
                ok = (
                    len(parents) >= 2
                    and isinstance(parents[-1], pp.MatrixSelector)
                    and isinstance(parents[-2], pp.Call)
                    and parents[-2].func.name in ("rate", "irate", "increase")
                )
                if not ok:
                    out.append(
                        f"target-counter-agg-rule: counter {name} is not inside rate(), irate() or "
                        "increase()"
                    )
        if (
            isinstance(n, pp.MatrixSelector)
            and parents
            and isinstance(parents[-1], pp.Call)
            and parents[-1].func.name in ("rate", "irate")
            and pp.display_duration(n.range) != RATE_INTERVAL
        ):
            out.append("target-rate-interval-rule: rate() and irate() should use $__rate_interval")
    labels = out_labels(ast) or set()
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    for label in sorted(used - labels):
        out.append(
            f"legend uses {{{{{label}}}}}, which the result does not carry "
            f"({', '.join(sorted(labels)) or 'no labels'})"
        )
    for label in sorted(labels - used - {"job"}):
        out.append(
            f"legend does not name {{{{{label}}}}}: series that differ only in {label} would "
            "share one legend"
        )
    return out
