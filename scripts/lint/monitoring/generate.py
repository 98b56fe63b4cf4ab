"""Files generated from the dashboard for the external checkers.

- every panel query and variable selector as a recording rule, for `promtool check rules`
  (Prometheus' own parser);
- a TypeScript module typing the dashboard, and each panel's options and custom field config,
  with @grafana/schema, for `tsc --strict`.
"""

import json
import re
import sys

import yaml

from .dashboard import all_panels
from .promql import substitute


def dashboard_rules(d, path_out):
    variables = {v.get("name") for v in d.get("templating", {}).get("list", [])}
    rules = []
    for p in all_panels(d):
        for t in p.get("targets", []):
            rules.append(
                {
                    "record": f"dashboard:panel{p['id']}:{t['refId']}",
                    "expr": substitute(t["expr"], variables)[0],
                }
            )
    for v in d.get("templating", {}).get("list", []):
        query = v.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        m = (
            re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query or "")
            if v.get("type") == "query"
            else None
        )
        if m:
            rules.append(
                {
                    "record": f"dashboard:variable:{v['name']}",
                    "expr": substitute(m.group(1), variables)[0],
                }
            )
    with open(path_out, "w", encoding="utf-8") as f:
        yaml.safe_dump(
            {"groups": [{"name": "dashboard-queries", "rules": rules}]}, f, sort_keys=False
        )
    print(f"{len(rules)} queries")


PLUGIN_TYPES = {
    "timeseries": ("TimeSeries", "timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen", True),
    "stat": ("Stat", "stat/panelcfg/x/StatPanelCfg_types.gen", False),
    "state-timeline": (
        "StateTimeline",
        "statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen",
        True,
    ),
}


def dashboard_ts(d, path_out):
    lines = ["import type { Dashboard } from '@grafana/schema';"]
    for ns, module, _ in PLUGIN_TYPES.values():
        lines.append(
            f"import type * as {ns} from '@grafana/schema/dist/esm/raw/composable/{module}';"
        )
    lines.append(
        "// JSON spells an enum by its value: every string enum becomes the union of its values.\n"
        "type Json<T> = T extends string ? `${T}`\n"
        "  : T extends number | boolean | null | undefined ? T\n"
        "  : T extends ReadonlyArray<infer U> ? Array<Json<U>>\n"
        "  : T extends object ? { [K in keyof T]: Json<T[K]> }\n"
        "  : T;"
    )
    lines.append(
        f"export const dashboard: Json<Dashboard> = {json.dumps(d, indent=2, ensure_ascii=False)};"
    )
    count = 0
    for p in all_panels(d):
        kind = p.get("type")
        if kind == "row":
            continue
        if kind not in PLUGIN_TYPES:
            sys.exit(f"panel {p.get('id')}: no schema for panel type {kind!r}")
        ns, _, has_custom = PLUGIN_TYPES[kind]
        lines.append(
            f"export const panel{p['id']}Options: Json<{ns}.Options> = "
            f"{json.dumps(p.get('options', {}), ensure_ascii=False)};"
        )
        custom = p.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is not None:
            if not has_custom:
                sys.exit(f"panel {p['id']}: a {kind} panel has no custom field config")
            lines.append(
                f"export const panel{p['id']}Custom: Json<{ns}.FieldConfig> = "
                f"{json.dumps(custom, ensure_ascii=False)};"
            )
        count += 1
    with open(path_out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{count} panels")
