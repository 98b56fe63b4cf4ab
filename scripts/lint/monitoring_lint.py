"""Lints the Grafana dashboard and the Prometheus alert rules (deploy/grafana, deploy/prometheus).

The dashboard must import as is into any Grafana and follow Grafana's dashboard-linter rules; the
dashboard and the alerts may only use metrics, labels and label values the worker exports (the
metrics contract in monitoring/metrics.py); every alert has a runbook section and unit tests. The
checks live in the monitoring package; scripts/lint-deploy.sh runs them together with promtool and
tsc, and runs every checker on deliberately broken copies as a negative control.

Subcommands:
  dashboard FILE                    import-ability, dashboard-linter rules, metrics contract
  dashboard-rules FILE OUT          every panel query as a recording rule, for
                                    `promtool check rules`
  dashboard-ts FILE OUT             a TypeScript module typing the dashboard with @grafana/schema
  alerts RULES TESTS RUNBOOK        rule structure, annotations, runbook anchors, metrics contract,
                                    a firing and a non-firing test per alert
  break DASHBOARD RULES TESTS DIR   writes deliberately broken copies for the negative control
"""

import sys

from common import report
from monitoring.alerts import alerts_problems
from monitoring.broken import write_broken
from monitoring.dashboard import all_panels, dashboard_problems, strict_json
from monitoring.generate import dashboard_rules, dashboard_ts


def check_dashboard(path):
    try:
        d = strict_json(path)
    except ValueError as e:
        sys.exit(f"{path}: not valid JSON: {e}")
    problems = dashboard_problems(d)
    panels = [p for p in all_panels(d) if p.get("type") != "row"]
    queries = sum(len(p.get("targets", [])) for p in panels)
    report(problems, f"ok: {len(panels)} panels, {queries} queries")


def check_alerts(rules_path, tests_path, runbook_path):
    problems, count = alerts_problems(rules_path, tests_path, runbook_path)
    report(
        problems,
        f"ok: {count} alerts, each with severity, summary, description, runbook heading, and a "
        "firing and a non-firing test",
    )


def main(argv=None):
    argv = sys.argv if argv is None else argv
    cmd = argv[1]
    if cmd == "dashboard":
        check_dashboard(argv[2])
    elif cmd == "dashboard-rules":
        dashboard_rules(strict_json(argv[2]), argv[3])
    elif cmd == "dashboard-ts":
        dashboard_ts(strict_json(argv[2]), argv[3])
    elif cmd == "alerts":
        check_alerts(argv[2], argv[3], argv[4])
    elif cmd == "break":
        write_broken(argv[2], argv[3], argv[4], argv[5])
    else:
        sys.exit(f"unknown subcommand {cmd}")


if __name__ == "__main__":
    main()
