"""Deliberately broken copies of the dashboard, the alert rules and their tests.

scripts/lint-deploy.sh runs every monitoring checker on these copies and fails unless each one
rejects them, naming the problem: a checker that accepts anything proves nothing.
"""

import json

from .dashboard import all_panels, strict_json


def write_broken(dash_path, rules_path, tests_path, out_dir):
    d = strict_json(dash_path)
    panels = {p["id"]: p for p in all_panels(d)}
    d["__inputs"] = [{"name": "DS_PROMETHEUS", "type": "datasource", "pluginId": "prometheus"}]
    p = panels[9]
    p["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}  # hard-coded data source
    p["targets"][1]["expr"] = (
        'sum(camunda_worker_tasks_completed_total{job=~"$job", instance=~"$instance"})'
    )
    p["targets"][2]["expr"] = (
        'sum(rate(camunda_worker_tasks_failed_total{job=~"$job", instance=~"$instance"}[5m]))'
    )
    panels[10]["fieldConfig"]["defaults"].pop("unit")
    panels[10]["targets"][0]["expr"] = panels[10]["targets"][0]["expr"].replace(
        "by (reason)", "by (reasons)"
    )
    panels[12]["targets"][0]["expr"] = panels[12]["targets"][0]["expr"].replace(
        "sum by (le)", "sum by (le"
    )
    panels[14]["targets"][0]["expr"] = panels[14]["targets"][0]["expr"].replace(
        "camunda_worker_follow_ups_pending", "camunda_worker_followups_pending"
    )
    panels[26]["targets"][0]["expr"] = panels[26]["targets"][0]["expr"].replace(
        ', node=~"$node"', ""
    )
    panels[11]["fieldConfig"]["defaults"]["custom"]["drawStyle"] = "lines"  # not a GraphDrawStyle
    panels[11]["fieldConfig"]["defaults"]["colour"] = {"mode": "fixed"}  # unknown key
    with open(f"{out_dir}/dashboard.json", "w", encoding="utf-8") as f:
        json.dump(d, f, indent=2)

    rules = open(rules_path, encoding="utf-8").read()
    good_expr = "max without (node) (camunda_worker_engine_up) == 0"
    assert good_expr in rules, "alerts.yaml changed: update the negative control"
    broken = rules.replace(good_expr, "max without (node) (camunda_worker_engine_up == 0", 1)
    with open(f"{out_dir}/alerts.yaml", "w", encoding="utf-8") as f:
        f.write(broken)
    contract = rules.replace(
        "camunda_worker_follow_ups_capacity", "camunda_worker_follow_up_capacity"
    )
    contract = contract.replace('runbook: "README.md#runbook-camundaworkerabsent"', "")
    with open(f"{out_dir}/alerts_contract.yaml", "w", encoding="utf-8") as f:
        f.write(contract)

    tests = open(tests_path, encoding="utf-8").read()
    first_firing = "      - eval_time: 7m\n        alertname: CamundaWorkerEngineUnreachable\n"
    assert first_firing in tests, "alerts_test.yaml changed: update the negative control"
    with open(f"{out_dir}/alerts_test.yaml", "w", encoding="utf-8") as f:
        f.write(tests.replace(first_firing, first_firing.replace("7m", "6m"), 1))
