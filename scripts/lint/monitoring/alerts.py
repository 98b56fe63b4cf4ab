"""Alert rule checks: structure, annotations, runbook anchors, metrics contract, tests per alert.

promtool checks the syntax and runs the unit tests; this checks the conventions around them: names,
a `for:`, just a severity label, summary/description/runbook annotations whose runbook anchor has
its heading in README.md, the $labels each annotation uses, and a firing and a non-firing test for
every alert.
"""

import re

import yaml

from .promql import contract_problems, out_labels, parse

SEVERITIES = {"critical", "warning"}
ANNOTATIONS = {"summary", "description", "runbook"}


def alerts_problems(rules_path, tests_path, runbook_path):
    problems = []
    doc = yaml.safe_load(open(rules_path, encoding="utf-8"))
    tests = yaml.safe_load(open(tests_path, encoding="utf-8"))
    runbook = open(runbook_path, encoding="utf-8").read()
    headings = set(re.findall(r"^### Runbook: (\S+)$", runbook, re.M))
    alerts = {}
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert")
            if not name:
                problems.append(f"{rule.get('record')}: only alerting rules belong in this file")
                continue
            where = name
            if not re.fullmatch(r"CamundaWorker[A-Z][A-Za-z]+", name):
                problems.append(f"{where}: alert names are CamundaWorker<CamelCase>")
            if name in alerts:
                problems.append(f"{where}: defined twice")
            alerts[name] = rule
            if "for" not in rule:
                problems.append(
                    f"{where}: no `for:` (write `for: 0m` to fire on the first evaluation)"
                )
            labels = rule.get("labels") or {}
            if set(labels) != {"severity"} or labels.get("severity") not in SEVERITIES:
                problems.append(
                    f"{where}: labels must be just severity: one of {sorted(SEVERITIES)}"
                )
            ann = rule.get("annotations") or {}
            if set(ann) != ANNOTATIONS:
                problems.append(
                    f"{where}: annotations must be {sorted(ANNOTATIONS)}, are {sorted(ann)}"
                )
            anchor = f"README.md#runbook-{name.lower()}"
            if ann.get("runbook") != anchor:
                problems.append(f"{where}: runbook should be {anchor!r}")
            if name not in headings:
                problems.append(f"{where}: {runbook_path} has no heading '### Runbook: {name}'")
            ast, error = parse(str(rule.get("expr", "")))
            if error:
                problems.append(f"{where}: invalid PromQL: {error}")
                continue
            problems.extend(f"{where}: {msg}" for msg in contract_problems(ast))
            have = out_labels(ast) or set()
            for key, text in ann.items():
                for label in re.findall(r"\$labels\.(\w+)", str(text)):
                    if label not in have:
                        problems.append(
                            f"{where}: annotation {key} uses $labels.{label}, which the alert "
                            f"does not carry ({', '.join(sorted(have)) or 'no labels'})"
                        )
    for heading in sorted(headings - set(alerts)):
        problems.append(f"{runbook_path}: '### Runbook: {heading}' has no alert")
    # A firing and a non-firing case for every alert.
    if (tests or {}).get("rule_files") != ["alerts.yaml"]:
        problems.append(f"{tests_path}: rule_files should be [alerts.yaml]")
    fires, silent = set(), set()
    for case in (tests or {}).get("tests", []):
        for t in case.get("alert_rule_test", []):
            name = t.get("alertname")
            if name not in alerts:
                problems.append(f"{tests_path}: tests the unknown alert {name!r}")
            (fires if t.get("exp_alerts") else silent).add(name)
    for name in alerts:
        if name not in fires:
            problems.append(f"{name}: no test in which it fires")
        if name not in silent:
            problems.append(f"{name}: no test in which it must not fire")
    return problems, len(alerts)
